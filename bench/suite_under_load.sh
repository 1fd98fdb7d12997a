#!/usr/bin/env bash
# The full suite N times in a row (default 3) while `bench/run.py --quick` loops beside it, the way
# issue 12 asks the suite to hold up on a loaded 2-core machine. Logs and a summary go to $OUT.
# Usage: bash bench/suite_under_load.sh [N]   (OUT defaults to a new temp dir)
set -u
cd "$(dirname "$0")/.."
runs="${1:-3}"
out="${OUT:-$(mktemp -d)}"
: > "$out/summary.txt"
for i in $(seq 1 "$runs"); do
  setsid bash -c 'while true; do python3 bench/run.py --quick --out "$(mktemp -d)/q.json" >/dev/null 2>&1; done' &
  load=$!
  start=$(date +%s)
  python3 -m pytest -n 2 --dist loadfile -q -p no:cacheprovider > "$out/run$i.log" 2>&1
  rc=$?
  kill -- "-$load" 2>/dev/null
  pkill -f gpuconsole-bench- 2>/dev/null  # the bench's demo and watcher of the interrupted round
  echo "run $i rc=$rc secs=$(( $(date +%s) - start )) $(tail -n 1 "$out/run$i.log")" | tee -a "$out/summary.txt"
done
echo "logs: $out"
