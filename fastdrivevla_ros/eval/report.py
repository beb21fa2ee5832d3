"""Reports of replay runs: the paper's Table 1 layout in markdown, and plots.

"Rel." is the share of the unpruned model's performance a run keeps, as FastDriveVLA's
Table 1 computes it: 100 * baseline Avg / run Avg (lower-is-better metrics), per metric group.

`fastdrivevla report RUN_DIR... --out DIR [--baseline DIR]` compares several runs (e.g. one
pruner at 25/50/75 %): one table plus metrics-vs-pruning-ratio plots.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.eval.store import METRICS, PREDICTIONS, PredictionStore, run_metrics
from fastdrivevla_ros.files import json_safe, save_figure, write_json, write_text

GROUPS = (("l2_cm", "L2 (cm) ↓"), ("collision_pct", "Collision (%) ↓"),
          ("intersection_pct", "Intersection (%) ↓"))
KEYS = ("1s", "2s", "3s", "avg")


def relative(run_avg, base_avg) -> float | None:
    """100 * base / run; None when undefined: missing values, or a run scoring 0 (a ratio
    with 0 says nothing, also when both are 0: "100 %" would claim a measured equality)."""
    if run_avg is None or base_avg is None or run_avg == 0:
        return None
    return 100.0 * base_avg / run_avg


def label(m: dict) -> str:
    """A row's name says what the LLM saw: the kept share of visual tokens (per camera too
    when the run used per-view budgets), not just the configured ratio."""
    pruner = m.get("pruner")
    if pruner == "ground_truth":
        return "ground truth"
    kept = m.get("kept_fraction_mean")
    if pruner in (None, "none"):
        return "unpruned"
    if kept is None:                       # metrics.json written before kept fractions existed
        return f"{pruner} ({100 * (m.get('pruning_ratio') or 0):.0f}% pruned)"
    text = f"{pruner}, {100 * kept:.0f}% kept"
    views = m.get("view_kept_fraction") or {}
    if m.get("view_ratios") and views:
        text += " (" + ", ".join(f"{c} {100 * f:.0f}%" for c, f in views.items()) + ")"
    return text


def pruned_share(m: dict) -> float:
    """Effective share of visual tokens pruned (x axis of the ratio plots)."""
    kept = m.get("kept_fraction_mean")
    return 1.0 - kept if kept is not None else float(m.get("pruning_ratio") or 0.0)


def _num(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table_rows(rows: list[dict], baseline: dict | None, samples: bool = False) -> list[str]:
    """Table 1 rows; `samples` adds each run's sample count (runs over different keyframes)."""
    head = ["Method", *(["Samples"] if samples else []), "Tokens", "ms/plan"]
    for key, title in GROUPS:
        head += [f"{title} 1s", "2s", "3s", "Avg.", "Rel."]
    head.append("Waypoints off the map patch")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        kept = m.get("tokens_kept_mean")
        cells = [label(m), *([str(m["samples"])] if samples else []),
                 "–" if not kept else f"{kept:.0f}/{m.get('tokens_total_mean', 0):.0f}",
                 _num((m.get("timings_ms_mean") or {}).get("total"), 1)]
        for key, _ in GROUPS:
            values = m.get(key) or {}
            cells += [_num(values.get(k)) for k in KEYS]
            rel = relative(values.get("avg"), ((baseline or {}).get(key) or {}).get("avg")) \
                if baseline is not None else None
            cells.append("–" if rel is None else f"{rel:.1f}%")
        cells.append(_off_map(m))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _off_map(m: dict) -> str:
    """'N (in S samples)': waypoints the collision/intersection metrics cannot judge."""
    n = m.get("waypoints_outside_map")
    if n is None:
        return "unknown"
    return f"{n} (in {m.get('samples_outside_map', 0)} samples)"


def latency_rows(rows: list[dict]) -> list[str]:
    """Mean stage latency (ms), one row per run."""
    stages = list(dict.fromkeys(k for m in rows for k in (m.get("timings_ms_mean") or {})))
    if not stages:
        return []
    lines = ["| Method | " + " | ".join(stages) + " |", "|" + "---|" * (len(stages) + 1)]
    for m in rows:
        t = m.get("timings_ms_mean") or {}
        lines.append(f"| {label(m)} | " + " | ".join(_num(t.get(s), 1) for s in stages) + " |")
    return lines


FRAME_NOTE = ("Trajectories and scores are in the **{frame}**. Impromptu-VLA's training targets "
              "are in the **LiDAR frame** (x right, y forward, origin about 0.94 m ahead of the "
              "rear axle); a model trained on them is scored here in the ego frame "
              "(docs/bags.md, Frames).")


def markdown(runs: list[dict], baseline: dict | None = None,
             title: str = "Open-loop planning", scope: str | None = None,
             samples: bool = False) -> str:
    """A Table-1 style report for runs (baseline shown first when given); `scope` says which
    samples were scored when that is not simply every sample of each run."""
    from fastdrivevla_ros.eval.metrics import FRAME

    rows = ([baseline] if baseline is not None else []) + runs
    m = runs[0]
    notes = [
        f"# {title}", "",
        *([f"**{scope}**", ""] if scope else []),
        f"Convention **{m['convention']}** (L2, collision and intersection as in "
        "docs/bags.md and fastdrivevla_ros/eval/metrics.py); "
        f"{m['samples']} samples with a full 3 s future of {m.get('frames', m['samples'])} "
        f"keyframes; parse failures (counted as zero waypoints): {m.get('parse_failed', 0)}; "
        f"keyframes that failed (not scored): {len(m.get('errors') or [])}.{_coverage(m)}",
        FRAME_NOTE.format(frame=m.get("frame") or FRAME),
        f"Drivable area from: {', '.join(m.get('drivable_source') or ['-'])} "
        "(`semantic_prior` is the devkit raster of drivable surface AND sidewalks, an "
        "approximation of the map expansion's drivable_area). Waypoints beyond the map patch "
        "cannot be judged by the intersection metric: they are counted in the last column.",
        "Rel. = 100 × baseline Avg / run Avg (share of the unpruned model's performance kept; "
        "– where the run's Avg. is 0, e.g. no collisions in either run)."
        if baseline is not None else "Rel. needs a baseline (`--baseline UNPRUNED_RUN_DIR`).",
        "", *table_rows(rows, baseline, samples), ""]
    latency = latency_rows(rows)
    if latency:
        notes += ["Mean stage latency (ms) per plan:", "", *latency, ""]
    return "\n".join(notes)


def _coverage(m: dict) -> str:
    """' Covers N of the M keyframes ...' when a --limit run stopped early, else ''."""
    total, done = m.get("keyframes_in_shard"), m.get("frames")
    if m.get("complete") is False and total is None:
        return f" **Covers only the first {done} keyframes** (`--limit`): not a full evaluation."
    if total is None or done is None or done >= total:
        return ""
    return (f" **Covers {done} of the {total} keyframes** of the bag (shard) "
            "(`--limit`): not a full evaluation.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label_axes(ax, xlabel: str, ylabel: str) -> None:
    """Axis labels, a light grid, and a legend when something was labelled."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_l2_horizon(runs: list[dict], path: Path) -> None:
    """L2 at each future step (0.5 ... 3.0 s) of each run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in runs:
        per_step = m.get("l2_cm_per_step") or []
        if per_step:
            ax.plot([0.5 * (k + 1) for k in range(len(per_step))], per_step, marker="o",
                    label=label(m))
    _label_axes(ax, "horizon (s)", "L2 at step (cm)")
    save_figure(fig, path, dpi=120)


def plot_vs_ratio(runs: list[dict], path: Path, baseline: dict | None = None) -> None:
    """Avg L2 / collision / intersection against the pruning ratio, one line per pruner."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    by_pruner: dict[str, list[dict]] = {}
    for m in runs:
        by_pruner.setdefault(m.get("pruner", "?"), []).append(m)
    for ax, (key, title) in zip(axes, GROUPS):
        for pruner, ms in sorted(by_pruner.items()):
            ms = sorted(ms, key=pruned_share)
            ax.plot([100 * pruned_share(m) for m in ms],
                    [(m.get(key) or {}).get("avg") for m in ms], marker="o", label=pruner)
        if baseline is not None and (baseline.get(key) or {}).get("avg") is not None:
            ax.axhline(baseline[key]["avg"], color="k", ls="--", lw=1, label="unpruned")
        ax.set_title(f"{title} (Avg.)", fontsize=10)
        ax.set_xlabel("visual tokens pruned (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def _by_pruner(runs: list[dict]) -> dict[str, list[dict]]:
    """{pruner: its runs, fewest tokens pruned first}."""
    out: dict[str, list[dict]] = {}
    for m in runs:
        out.setdefault(m.get("pruner", "?"), []).append(m)
    return {p: sorted(ms, key=pruned_share) for p, ms in sorted(out.items())}


def plot_metrics_vs_kept(runs: list[dict], path: Path, baseline: dict | None = None) -> None:
    """L2 / collision / intersection at 1, 2 and 3 s (a panel each) against the share of
    visual tokens kept, one line per pruner (the paper's ratio curves); baseline dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(GROUPS), 3, figsize=(12, 9), squeeze=False)
    for row, (key, title) in enumerate(GROUPS):
        for col, horizon in enumerate(KEYS[:3]):
            ax = axes[row][col]
            for pruner, ms in _by_pruner(runs).items():
                ax.plot([100 * (1 - pruned_share(m)) for m in ms],
                        [(m.get(key) or {}).get(horizon) for m in ms], marker="o", label=pruner)
            base = ((baseline or {}).get(key) or {}).get(horizon)
            if base is not None:
                ax.axhline(base, color="k", ls="--", lw=1, label="unpruned")
            ax.set_title(f"{title} at {horizon}", fontsize=9)
            ax.set_xlabel("visual tokens kept (%)", fontsize=8)
            ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def plot_latency_vs_ratio(runs: list[dict], path: Path) -> None:
    """Mean plan latency (ms) against the share of visual tokens pruned, one line per pruner
    (the unpruned run is the point at 0 %)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for pruner, ms in _by_pruner(runs).items():
        ax.plot([100 * pruned_share(m) for m in ms],
                [(m.get("timings_ms_mean") or {}).get("total") for m in ms], marker="o",
                label=pruner)
    _label_axes(ax, "visual tokens pruned (%)", "plan latency (ms, mean)")
    save_figure(fig, path, dpi=120)


def load_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise DataError(f"no metrics.json in {run_dir}: run `fastdrivevla replay` "
                        "(or merge) first")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); rerun `fastdrivevla replay` into "
                        f"{run_dir} to rewrite it") from e
    if not isinstance(metrics, dict) or "convention" not in metrics:
        raise DataError(f"{path}: not the metrics.json of a replay run; rerun `fastdrivevla "
                        f"replay` into {run_dir} to rewrite it")
    return metrics


def _scored(records: list[dict]) -> set[str]:
    return {r["token"] for r in records if r.get("metrics")}


def _records(run_dir) -> list[dict]:
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise DataError(f"no {PREDICTIONS} in {run_dir}: not a replay run directory")
    return PredictionStore(path).ordered()


def _rescored(metrics: dict, records: list[dict], common: set[str]) -> dict:
    """metrics recomputed on the records of `common` samples only."""
    spec = metrics | {"settings": {"view_ratios": metrics.get("view_ratios")}}
    return run_metrics([r for r in records if r["token"] in common], spec,
                       metrics["convention"])


def same_samples(runs: dict, intersect: bool) -> tuple[dict, str | None]:
    """{run dir: (metrics, records)} -> ({run dir: metrics}, scope note).

    Runs scored on different samples are not comparable: refused (DataError naming the
    difference) unless `intersect`, which rescores every run on the common samples."""
    sets = {d: _scored(records) for d, (_, records) in runs.items()}
    common = set.intersection(*sets.values())
    if all(s == common for s in sets.values()):
        return {d: m for d, (m, _) in runs.items()}, None
    if not intersect:
        diff = "; ".join(f"{d}: {len(s)} samples, {len(s - common)} not in every run"
                         for d, s in sets.items())
        raise DataError(f"runs were scored on different samples ({diff}); compare runs over "
                        f"the same keyframes, or pass --intersect to score all on the "
                        f"{len(common)} common samples")
    if not common:
        raise DataError("the runs have no scored sample in common")
    return ({d: _rescored(m, records, common) for d, (m, records) in runs.items()},
            f"Scored on the {len(common)} samples common to all {len(runs)} runs (--intersect); "
            "each run's own metrics.json covers all of its samples.")


def write_run_report(out_dir: Path, metrics: dict, baseline=None,
                     records: list[dict] | None = None) -> None:
    """report.md and l2_horizon.png for one run; `baseline` is a run dir or metrics dict.

    A baseline over other samples is compared on the common ones (said in the header)."""
    out_dir = Path(out_dir)
    base, scope = baseline, None
    if isinstance(baseline, (str, Path)):
        base = load_metrics(baseline)
        if records is not None:
            both = {"run": (metrics, records), "baseline": (base, _records(baseline))}
            scored, scope = same_samples(both, intersect=True)
            metrics, base = scored["run"], scored["baseline"]
    write_text(out_dir / "report.md", markdown([metrics], base, scope=scope))
    plot_l2_horizon(([base] if base else []) + [metrics], out_dir / "l2_horizon.png")


def check_report_out(out_dir) -> None:
    """A comparison's --out must not be a replay run folder (its own report.md and plots
    would be overwritten) nor a file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for report.md and plots")
    for name in ("shard.json", "predictions.jsonl", "metrics.json"):
        if (out / name).exists():
            raise ConfigError(f"--out {out} is a replay run folder (it has {name}): its own "
                              "report.md and plots would be overwritten; use another --out")


def finish_run(out_dir: Path, records: list[dict], spec: dict, baseline=None,
               throughput: float | None = None) -> dict:
    """metrics.json + report.md + plots for a run (or merged) directory; `spec` holds at least
    bag, pruner, pruning_ratio, model and convention (the manifest does)."""
    # strict JSON values everywhere (an empty shard's means are None, never nan)
    metrics = json_safe(run_metrics(records, spec, spec["convention"], throughput))
    for key in ("keyframes_in_shard", "complete"):       # a --limit run says it is partial
        if key in spec:
            metrics[key] = spec[key]
    write_json(out_dir / METRICS, metrics)
    write_run_report(out_dir, metrics, baseline, records)
    return metrics


def _key(run_dir) -> str:
    return str(Path(run_dir).resolve())


def compare(run_dirs: list, out_dir, baseline=None, intersect: bool = False,
            own_samples: bool = False) -> Path:
    """One report over many runs (sorted by pruner then kept share) plus the ratio plots.

    The baseline is shown once (also when it is listed among the runs); all runs must have
    scored the same samples unless `intersect`, or `own_samples`: each run scored on its own
    samples, with a Samples column (the settings folders of one ROS replay whose settings
    changed at runtime)."""
    if not run_dirs:
        raise DataError("report needs at least one run directory")
    check_report_out(out_dir)
    base_dir = _key(baseline) if baseline else None
    dirs = [d for d in dict.fromkeys(_key(d) for d in run_dirs) if d != base_dir]
    if not dirs:                      # only the baseline given: it is the one run
        dirs, base_dir = [base_dir], None
    loaded = {d: (load_metrics(d), _records(d)) for d in dirs + ([base_dir] if base_dir else [])}
    conventions = {m["convention"] for m, _ in loaded.values()}
    if len(conventions) > 1:
        raise DataError(f"runs use different metric conventions {sorted(conventions)}")
    if own_samples:
        scored = {d: m for d, (m, _) in loaded.items()}
        scope = ("Each run is scored on its own samples (settings changed during one "
                 "replay): rows cover different keyframes (Samples column).")
    else:
        scored, scope = same_samples(loaded, intersect)
    base = scored.pop(base_dir) if base_dir else None
    runs = sorted(scored.values(), key=lambda m: (pruned_share(m), m.get("pruner", "")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.md", markdown(runs, base, "Pruning comparison", scope,
                                          samples=own_samples))
    plot_l2_horizon(([base] if base else []) + runs, out / "l2_horizon.png")
    plot_vs_ratio(runs, out / "metrics_vs_ratio.png", base)
    return out / "report.md"
