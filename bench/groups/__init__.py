"""The benchmark groups of run.py, one module each (jobs in two steps); see bench/README.md.

Each `bench_*` function returns Result rows; `history` lives in bench/history.py, which is also the
long run's script.
"""
