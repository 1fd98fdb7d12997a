"""The `cloud` group: what a user waits for in the cloud commands (`cloud up`, `cloud down`,
`cloud ls`), and what `[cloud.aws]` discovery adds to every `status --json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import Check, Result, Timed, cli_argv, ms, percentile, run_timed
from plan import CloudPlan

from gpuconsole.config import load_config
from groups.common import import_ms

BOOT_S = 0.3  # the demo's simulated boot: a running instance answers SSH this long after
DISCOVERY_BUDGET_MS = 1000.0
DISCOVERY_BUDGET = "≤ +1.0 s"


def _cli(config: Path, *args: str) -> Timed:
    """One `python -m gpuconsole --config CONFIG ARGS` in a fresh process; a failure raises."""
    timed = run_timed(cli_argv("--config", str(config), *args), timeout_s=120.0)
    if timed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {timed.returncode}: {timed.stderr[-500:]}")
    return timed


def on_prem_copy(config: Path, dest: Path) -> Path:
    """The config without its [cloud.aws] table (every other line kept): the same fleet, on-prem only."""
    kept: list[str] = []
    in_cloud = False
    for line in config.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_cloud = stripped.strip("[]").strip().startswith("cloud")
        if not in_cloud:
            kept.append(line)
    dest.write_text("\n".join(kept) + "\n")
    if "[cloud" in dest.read_text():
        raise RuntimeError(f"{dest}: a [cloud.*] table is left")
    return dest


@dataclass
class _UpRuns:
    """`cloud up` samples: wall ms, phases_s per run, `cloud down` ms, the instance still running."""

    wall_ms: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    down_ms: list[float] = field(default_factory=list)
    kept: str | None = None

    def down(self, config: Path, instance_id: str) -> None:
        """Terminate one instance with a timed `cloud down ID --json`."""
        reply = _cli(config, "cloud", "down", instance_id, "--json")
        if [item["id"] for item in json.loads(reply.stdout)["instances"]] != [instance_id]:
            raise RuntimeError(f"cloud down {instance_id}: unexpected reply {reply.stdout!r}")
        self.down_ms.append(ms(reply.elapsed_s))


def _cloud_up(plan: CloudPlan, config: Path, runs: _UpRuns) -> None:
    """`cloud up --json` runs, one instance each, terminated before the next; the last is kept
    running (`runs.kept`) as one of the discovery step's instances, and terminated after it."""
    for index in range(plan.cloud_up_runs):
        up = _cli(config, "cloud", "up", "--json")
        instances = json.loads(up.stdout)["instances"]
        if len(instances) != 1 or set(instances[0]["phases_s"]) != {"pending", "running", "ssh", "agent"}:
            raise RuntimeError(f"cloud up: unexpected reply {instances}")
        runs.wall_ms.append(ms(up.elapsed_s))
        runs.phases.append(instances[0]["phases_s"])
        if index == plan.cloud_up_runs - 1:
            runs.kept = instances[0]["id"]
        else:
            runs.down(config, instances[0]["id"])


def _up_rows(runs: _UpRuns) -> list[Result]:
    """Rows for `cloud up` (wall, agent ready, phase medians) and `cloud down`."""
    agent_ms = [ms(phases["agent"]) for phases in runs.phases]
    medians = {f"{phase}_ms_median": percentile([ms(p[phase]) for p in runs.phases], 50)
               for phase in ("pending", "running", "ssh", "agent")}
    medians["outside_wait_ms_median"] = percentile(
        [wall - agent for wall, agent in zip(runs.wall_ms, agent_ms, strict=True)], 50)
    return [
        Result("cloud up --json (1 instance, launch → agent ready), fresh process", "cloud", "ms",
               runs.wall_ms,
               notes=f"local EC2 (moto); simulated boot {BOOT_S:g} s + the demo's 0.2 s EC2 poll are in the "
                     "agent-ready time; `outside_wait` = wall − agent ready (interpreter, imports, type "
                     "choice, RunInstances)",
               extra={**medians, "phases_s_runs": runs.phases}),
        Result("cloud up: agent ready after launch (phases_s.agent)", "cloud", "ms", agent_ms,
               notes=f"includes the simulated {BOOT_S:g} s boot; running = "
                     f"{medians['running_ms_median']:.0f} ms, SSH = {medians['ssh_ms_median']:.0f} ms (medians)"),
        Result("cloud down ID --json (terminate 1 instance), fresh process", "cloud", "ms", runs.down_ms),
    ]


def _discovery(plan: CloudPlan, work: Path, config: Path, kept: str) -> list[Result]:
    """`status --json` with [cloud.aws] and N running instances vs on-prem only; then `cloud ls`.

    `kept` (the last `cloud up` run's instance) is one of the N; the others are launched here and
    terminated at the end (untimed).
    """
    count = plan.cloud_status_instances
    more: list[str] = []
    if count > 1:
        launched = _cli(config, "cloud", "up", "--count", str(count - 1), "--json")
        more = [item["id"] for item in json.loads(launched.stdout)["instances"]]
    ids = [kept, *more]
    try:
        onprem = on_prem_copy(config, work / "cloud-onprem.toml")
        onprem_nodes = len(load_config(str(onprem)).nodes)
        series: dict[str, list[float]] = {"onprem": [], "cloud": []}
        cpu: dict[str, list[float]] = {"onprem": [], "cloud": []}
        # No warm-up repetition: the `cloud ls` and `cloud up` runs before this imported the same
        # modules, and `cloud up` started each instance's agent once.
        for rep in range(plan.cloud_status_reps):
            order = ("cloud", "onprem") if rep % 2 else ("onprem", "cloud")  # alternate: drift hits both
            for variant in order:
                timed = _cli(onprem if variant == "onprem" else config, "status", "--json")
                nodes = json.loads(timed.stdout)["nodes"]
                want = onprem_nodes + (count if variant == "cloud" else 0)
                cloud_up = {n["name"] for n in nodes if n["reachable"] and n["source"] == "cloud"}
                if len(nodes) != want or not all(n["reachable"] for n in nodes):
                    raise RuntimeError(f"status ({variant}): {len(nodes)} nodes, want {want} reachable")
                if variant == "cloud" and cloud_up != set(ids):
                    raise RuntimeError(f"status: cloud nodes {sorted(cloud_up)}, want {sorted(ids)}")
                series[variant].append(ms(timed.elapsed_s))
                cpu[variant].append(ms(timed.cpu_s))
        ls_ms: list[float] = []
        for _ in range(plan.cloud_ls_reps):
            timed = _cli(config, "cloud", "ls", "--json")
            listed = {item["id"] for item in json.loads(timed.stdout)["instances"]}
            if not set(ids) <= listed:
                raise RuntimeError(f"cloud ls: {sorted(set(ids) - listed)} missing")
            ls_ms.append(ms(timed.elapsed_s))
    finally:
        if more:
            _cli(config, "cloud", "down", *more)
    python_ms = import_ms("pass", plan.import_runs)
    boto3_ms = import_ms("import boto3", plan.import_runs) - python_ms
    paired = [with_cloud - without for with_cloud, without in zip(series["cloud"], series["onprem"], strict=True)]
    label = f"{count} cloud instance{'s' if count != 1 else ''}"
    return [
        Result("status --json, on-prem only (1 node, no [cloud.aws])", "cloud", "ms", series["onprem"],
               extra={"cli_cpu_ms_median": percentile(cpu["onprem"], 50)}),
        Result(f"status --json with [cloud.aws], 1 on-prem node + {label}", "cloud", "ms", series["cloud"],
               extra={"cli_cpu_ms_median": percentile(cpu["cloud"], 50)}),
        Result(f"status --json: discovery cost ([cloud.aws] − on-prem), {label}", "cloud", "ms", paired,
               budget=DISCOVERY_BUDGET, checks=[Check("median", "<=", DISCOVERY_BUDGET_MS)],
               notes=f"paired per repetition; boto3 import alone ≈ {boto3_ms:.0f} ms (best of "
                     f"{plan.import_runs}); the rest is DescribeInstances and the {count} extra SSH "
                     "connection(s)",
               extra={"import_boto3_ms_best": boto3_ms, "python_start_ms_best": python_ms,
                      "cli_cpu_ms_difference_median":
                      percentile(cpu["cloud"], 50) - percentile(cpu["onprem"], 50)}),
        Result(f"cloud ls --json, {label}, fresh process", "cloud", "ms", ls_ms),
    ]


def bench_cloud(plan: CloudPlan, work: Path) -> list[Result]:
    """The cloud CLI against the demo's local EC2: `cloud up`, discovery in `status`, `cloud ls`.

    The demo runs in this process (DemoThread, as the tests run it): its SSH servers, the moto
    server and the bridge that boots instances as nodes are idle while a CLI process is measured.
    """
    from gpuconsole.demo.cluster import DemoThread

    with DemoThread(work / "cloud-demo", nodes=1, gpus=2, cloud=True, boot_s=BOOT_S,
                    max_instances=max(4, plan.cloud_status_instances)) as demo:
        config = demo.config_path
        # Warm-up: page cache and .pyc files of boto3/botocore, moto's first (slow) requests.
        _cli(config, "cloud", "ls", "--json")
        demo.cloud.emulator.ec2.gpu_counts(["g6.xlarge"])
        runs = _UpRuns()
        try:
            _cloud_up(plan, config, runs)
            assert runs.kept is not None
            rows = _discovery(plan, work, config, runs.kept)
        finally:
            if runs.kept is not None:
                runs.down(config, runs.kept)
        return _up_rows(runs) + rows
