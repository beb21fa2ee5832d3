"""Evaluation sweeps on Ray: every pruner x ratio x bag (`fastdrivevla sweep`).

The only module that imports `ray` (lazily: the rest of the package runs without it). A task
is one (setting, bag); a worker is a Ray actor that loads the model ONCE and, per task, swaps
the pruner and the ratio on its engine and calls `replay_bag`, the very function a serial
`fastdrivevla replay` calls, into SWEEP/<setting>/<bag>/, an ordinary run folder (manifest
first, lock, resumable). So a result never depends on where or in which order it was
computed: pruners reset per frame (per scene for temporal ones), as for shards.

Faults: a worker process that dies is restarted by Ray and its task retried; the retried
`replay_bag` resumes the folder (the killed one's lock died with it, a torn last line is
dropped, finished keyframes are skipped), so no record is duplicated or torn. A rerun of the
sweep skips every (setting, bag) whose folder is finished. A worker that cannot load the model
says why (CheckpointError) instead of leaving the sweep waiting.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastdrivevla_ros.errors import CheckpointError, ConfigError, FastDriveError, \
    require_extra
from fastdrivevla_ros.eval.replay import replay_bag, run_manifest
from fastdrivevla_ros.eval.report import markdown, plot_l2_horizon
from fastdrivevla_ros.eval.run_folder import check_resumable, read_manifest
from fastdrivevla_ros.eval.store import METRICS, PREDICTIONS, PredictionStore, run_metrics
from fastdrivevla_ros.files import write_json

BASELINE = "none"
RETRIES = 3                 # restarts of a dead worker and retries of its task


@dataclass(frozen=True)
class Setting:
    """One pruner configuration of the sweep (ratio None: the pruner keeps every token)."""

    pruner: str
    ratio: float | None
    options: dict = field(default_factory=dict, hash=False)    # compared, not hashed

    @property
    def name(self) -> str:
        """Folder name: `none`, `fastv-0.5`; a short digest when the pruner has options."""
        text = self.pruner if self.ratio is None else f"{self.pruner}-{self.ratio:g}"
        if self.options:
            blob = json.dumps(self.options, sort_keys=True).encode()
            text += "-" + hashlib.sha256(blob).hexdigest()[:8]
        return text


@dataclass(frozen=True)
class Task:
    """One (setting, bag): replayed into run folder `out`."""

    setting: Setting
    bag: str
    out: str


@dataclass
class SweepSpec:
    """Everything a worker needs, fixed for the whole sweep."""

    model: str
    engine: dict                     # DrivingVLA.from_pretrained keywords (pruner excluded)
    limit: int | None = None
    convention: str = "omnidrive"
    on_error: str = "stop"


def grid(pruners: list[str], ratios: list[float], options: dict | None = None) -> list[Setting]:
    """The settings of a sweep: the unpruned baseline once, then every pruner x ratio (a
    pruner that keeps every token once)."""
    from fastdrivevla_ros.pruning.registry import check_pruner, pruner_class

    options = options or {}
    unknown = sorted(set(options) - set(pruners) - {BASELINE})
    if unknown:
        raise ConfigError(f"options given for pruners not in the sweep: {', '.join(unknown)}")
    for r in ratios:
        if not 0.0 < r < 1.0:
            raise ConfigError(f"ratios must lie in (0, 1), got {r}")
    out = [Setting(BASELINE, None)]
    for name in dict.fromkeys(pruners):
        check_pruner(name, options.get(name))
        if pruner_class(name).keeps_all:
            out.append(Setting(name, None, options.get(name) or {}))
        elif not ratios:
            raise ConfigError(f"pruner {name!r} prunes: give --ratios")
        else:
            out += [Setting(name, float(r), options.get(name) or {})
                    for r in dict.fromkeys(ratios)]
    return list(dict.fromkeys(out))


def tasks(settings: list[Setting], bags: list, out) -> list[Task]:
    """Every (setting, bag), bag-major so early results span all settings."""
    names = [Path(b).resolve().name for b in bags]
    if len(set(names)) != len(names):
        raise ConfigError(f"bags must have distinct directory names, got {names}")
    return [Task(s, str(b), str(Path(out) / s.name / n))
            for b, n in zip(bags, names) for s in settings]


def task_manifest(task: Task, spec: SweepSpec) -> dict:
    """The manifest `replay_bag` writes for `task` (known before any model is loaded)."""
    from fastdrivevla_ros.pruning.registry import pruner_class
    from fastdrivevla_ros.vla.engine import PlannerSettings

    pruner = pruner_class(task.setting.pruner)
    kw = _planner_kw(spec, task.setting)
    return run_manifest(task.bag, (0, 1), model=spec.model, dtype=spec.engine["dtype"],
                        pruner=pruner.name, keeps_all=pruner.keeps_all,
                        settings=PlannerSettings(**kw), pruner_options=task.setting.options)


LOAD_KEYS = ("dtype", "device", "attn_implementation")


def _planner_kw(spec: SweepSpec, setting: Setting) -> dict:
    kw = {k: v for k, v in spec.engine.items() if k not in LOAD_KEYS}
    return kw if setting.ratio is None else kw | {"pruning_ratio": setting.ratio}


def is_finished(task: Task, spec: SweepSpec) -> bool:
    """The folder holds this very run (else ConfigError, as replay says), ended with the same
    limit, with every expected keyframe; a folder of another run is refused up front."""
    manifest = task_manifest(task, spec)
    check_resumable(task.out, manifest)
    done = read_manifest(task.out)
    if not done or done.get("expected") is None or done.get("limit") != spec.limit or \
            done.get("convention") != spec.convention or not (Path(task.out) / METRICS).is_file():
        return False
    store = PredictionStore(Path(task.out) / PREDICTIONS)
    return all(token in store for token in done["expected"])


class Worker:
    """A Ray actor's body: one model load, then any number of (setting, bag) tasks."""

    def __init__(self, spec: SweepSpec, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.spec, self.engine, self.error, self.loads, self.tasks = spec, None, None, 0, 0
        try:
            from fastdrivevla_ros.vla.engine import DrivingVLA

            self.engine = DrivingVLA.from_pretrained(spec.model, **spec.engine)
            self.loads += 1
        except Exception as e:    # any cause (bad weights too): said by ready(), no dead actor
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> dict:
        return {"pid": os.getpid(), "loads": self.loads, "error": self.error}

    def run(self, task: Task) -> dict:
        """Replay one task exactly as `fastdrivevla replay` would; returns what it did."""
        from fastdrivevla_ros.pruning.registry import build_pruner

        s, spec = task.setting, self.spec
        self.engine.pruner = build_pruner(s.pruner, **s.options)
        self.engine.configure(**_planner_kw(spec, s))
        t0 = time.perf_counter()
        before = _records_in(task.out)
        metrics = replay_bag(task.bag, self.engine, task.out, limit=spec.limit,
                             name=spec.convention, model=spec.model, pruner_options=s.options,
                             on_error=spec.on_error, progress=False)
        self.tasks += 1
        return {"pid": os.getpid(), "loads": self.loads, "tasks": self.tasks,
                "frames": metrics["frames"],
                "planned": metrics["frames"] - before, "seconds": time.perf_counter() - t0}


def _records_in(run_dir) -> int:
    path = Path(run_dir) / PREDICTIONS
    return len(PredictionStore(path).records) if path.is_file() else 0


def import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")    # no phoning home
    return require_extra("ray", "cluster", "fastdrivevla sweep")


def start_ray(address: str | None, workers: int, object_store_mb: int = 200):
    """Join the cluster at `address`, or start a loopback-only local Ray sized for `workers`.

    Returns (ray, whether this call started it): a Ray the caller already runs is used as it
    is and left running."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=workers, object_store_memory=object_store_mb << 20,
                 _node_ip_address="127.0.0.1", **quiet)
    return ray, True


@dataclass
class Progress:
    """What the sweep did (also its return value)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: dict = field(default_factory=dict)    # task out dir -> reason
    planned: int = 0                               # keyframes planned by this run
    workers: dict = field(default_factory=dict)   # worker pid -> {loads, tasks} of the model
    start_s: float = 0.0           # Ray start + workers started and their models loaded
    run_s: float = 0.0             # then running the tasks


def run_sweep(task_list: list[Task], spec: SweepSpec, *, workers: int = 2,
              gpus_per_worker: float = 0.0, threads: int | None = 1, address: str | None = None,
              progress: bool = True) -> Progress:
    """Run every unfinished task on `workers` Ray actors; finished ones are skipped."""
    pending = [t for t in task_list if not is_finished(t, spec)]
    state = Progress(len(task_list), skipped=len(task_list) - len(pending))
    if not pending:
        return state
    t0 = time.perf_counter()
    ray, owned = start_ray(address, workers)
    actors = []
    try:
        actors = _start_workers(ray, spec, min(workers, len(pending)), gpus_per_worker, threads)
        state.start_s = time.perf_counter() - t0
        _dispatch(ray, actors, pending, state, progress)
        state.run_s = time.perf_counter() - t0 - state.start_s
    finally:
        for actor in actors:
            ray.kill(actor)
        if owned:
            ray.shutdown()
    return state


def _start_workers(ray, spec: SweepSpec, n: int, gpus: float, threads: int | None) -> list:
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=RETRIES,
                        max_task_retries=RETRIES)(Worker)
    actors = [remote.remote(spec, threads) for _ in range(n)]
    try:
        info = ray.get([a.ready.remote() for a in actors])
    except ray.exceptions.RayActorError as e:
        info = [{"error": f"the worker died ({str(e).splitlines()[0]})"}]
    problems = [i["error"] for i in info if i["error"]]
    if problems:
        for actor in actors:
            ray.kill(actor)
        raise CheckpointError(f"a sweep worker cannot load the model {spec.model}: "
                              f"{problems[0]}")
    return actors


def _dispatch(ray, actors: list, pending: list[Task], state: Progress, progress: bool) -> None:
    """Feed tasks to idle actors until all are done; one bar over all tasks."""
    from tqdm import tqdm

    queue, running, t0 = list(pending), {}, time.perf_counter()
    idle = list(actors)
    with tqdm(total=state.total, initial=state.skipped, unit="task", desc="sweep",
              disable=not progress) as bar:
        while queue or running:
            while queue and idle:
                actor, task = idle.pop(), queue.pop(0)
                running[actor.run.remote(task)] = (actor, task)
            rate = state.planned / (time.perf_counter() - t0)
            bar.set_postfix(running=len(running), failed=len(state.failed),
                            keyframes_per_s=f"{rate:.2f}")
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                actor, task = running.pop(ref)
                idle.append(actor)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:     # retries spent, or a task's own error
                    state.failed[task.out] = _reason(e)
                else:
                    state.done += 1
                    state.planned += out["planned"]
                    state.workers[out["pid"]] = {"loads": out["loads"], "tasks": out["tasks"]}
                bar.update(1)


def _reason(e: Exception) -> str:
    cause = getattr(e, "cause", None)
    return str(cause) if isinstance(cause, FastDriveError) else str(e).splitlines()[0]


# ------------------------------------------------------------------ the sweep's report

def setting_metrics(settings: list[Setting], task_list: list[Task], convention: str) -> list:
    """Per setting, its metrics over the records of all its bags (settings with a missing
    folder are left out)."""
    out = []
    for s in settings:
        dirs = [Path(t.out) for t in task_list if t.setting == s]
        if not all((d / METRICS).is_file() for d in dirs):
            continue
        records = [r for d in dirs for r in PredictionStore(d / PREDICTIONS).ordered()]
        spec = read_manifest(dirs[0]) | {"bag": [t.bag for t in task_list if t.setting == s]}
        m = run_metrics(records, spec, convention) | {"setting": s.name}
        out.append(m)
    return out


def write_sweep_report(out_dir, settings: list[Setting], task_list: list[Task],
                       convention: str) -> Path | None:
    """SWEEP/report.md (Table 1 over all settings, baseline first), metrics.json per setting
    and the plots: each metric at 1/2/3 s vs kept tokens (a line per pruner), latency vs
    ratio, L2 per horizon. None when no setting has finished yet."""
    from fastdrivevla_ros.eval.report import plot_latency_vs_ratio, plot_metrics_vs_kept

    out = Path(out_dir)
    runs = setting_metrics(settings, task_list, convention)
    if not runs:
        return None
    base = next((m for m in runs if m["setting"] == BASELINE), None)
    others = [m for m in runs if m is not base]
    for m in runs:
        write_json(out / m["setting"] / METRICS, m)
    title = f"Sweep: {len(runs)} settings x {len({t.bag for t in task_list})} bags"
    text = markdown(others or runs, base if others else None, title) + _plot_links()
    (out / "report.md").write_text(text, encoding="utf-8")
    plot_metrics_vs_kept(others, out / "metrics_vs_kept.png", base)
    plot_latency_vs_ratio(runs, out / "latency_vs_ratio.png")
    plot_l2_horizon(runs, out / "l2_horizon.png")
    return out / "report.md"


def _plot_links() -> str:
    return ("\n![metrics vs kept tokens](metrics_vs_kept.png)\n\n"
            "![latency vs ratio](latency_vs_ratio.png)\n\n![L2 per horizon](l2_horizon.png)\n")
