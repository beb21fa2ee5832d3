"""Reports of replay runs: the paper's Table 1 layout in markdown, and plots.

"Rel." is the share of the unpruned model's performance a run keeps, as FastDriveVLA's
Table 1 computes it: 100 * baseline Avg / run Avg (lower-is-better metrics), per metric group.

`fastdrivevla report RUN_DIR... --out DIR [--baseline DIR]` compares several runs (e.g. one
pruner at 25/50/75 %): one table plus metrics-vs-pruning-ratio plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastdrivevla_ros.errors import DataError

GROUPS = (("l2_cm", "L2 (cm) ↓"), ("collision_pct", "Collision (%) ↓"),
          ("intersection_pct", "Intersection (%) ↓"))
KEYS = ("1s", "2s", "3s", "avg")


def relative(run_avg, base_avg) -> float | None:
    """100 * base / run; None when undefined (missing values, or a perfect run vs a
    non-perfect baseline)."""
    if run_avg is None or base_avg is None:
        return None
    if run_avg == 0:
        return 100.0 if base_avg == 0 else None
    return 100.0 * base_avg / run_avg


def label(m: dict) -> str:
    if m.get("pruner") in (None, "none") or not m.get("pruning_ratio"):
        return "unpruned" if m.get("pruner") != "ground_truth" else "ground truth"
    return f"{m['pruner']} ({100 * m['pruning_ratio']:.0f}% pruned)"


def _num(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table_rows(runs: list[dict], baseline: dict | None) -> list[str]:
    head = ["Method", "Tokens"]
    for _, title in GROUPS:
        head += [f"{title} 1s", "2s", "3s", "Avg.", "Rel."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in runs:
        kept = m.get("tokens_kept_mean")
        cells = [label(m), "–" if not kept else f"{kept:.0f}/{m.get('tokens_total_mean', 0):.0f}"]
        for key, _ in GROUPS:
            values = m.get(key) or {}
            cells += [_num(values.get(k)) for k in KEYS]
            rel = relative(values.get("avg"), ((baseline or {}).get(key) or {}).get("avg")) \
                if baseline is not None else None
            cells.append("–" if rel is None else f"{rel:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(runs: list[dict], baseline: dict | None = None,
             title: str = "Open-loop planning") -> str:
    """A Table-1 style report for runs (baseline shown first when given)."""
    rows = ([baseline] if baseline is not None else []) + runs
    m = runs[0]
    notes = [
        f"# {title}", "",
        f"Convention **{m['convention']}** (L2, collision and intersection as in "
        "docs/bags.md and fastdrivevla_ros/eval/metrics.py); "
        f"{m['samples']} samples with a full 3 s future of {m.get('frames', m['samples'])} "
        f"keyframes; parse failures (counted as zero waypoints): {m.get('parse_failed', 0)}; "
        f"keyframes that failed (not scored): {len(m.get('errors') or [])}.",
        f"Drivable area from: {', '.join(m.get('drivable_source') or ['-'])} "
        "(`semantic_prior` is the devkit raster of drivable surface AND sidewalks, an "
        "approximation of the map expansion's drivable_area).",
        "Rel. = 100 × baseline Avg / run Avg (share of the unpruned model's performance kept)."
        if baseline is not None else "Rel. needs a baseline (`--baseline UNPRUNED_RUN_DIR`).",
        "", *table_rows(rows, baseline), ""]
    timing = m.get("timings_ms_mean") or {}
    if timing:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
        notes += [f"Mean stage latency (ms): {stages}", ""]
    return "\n".join(notes)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_l2_horizon(runs: list[dict], path: Path) -> None:
    """L2 at each future step (0.5 ... 3.0 s) of each run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in runs:
        per_step = m.get("l2_cm_per_step") or []
        if per_step:
            ax.plot([0.5 * (k + 1) for k in range(len(per_step))], per_step, marker="o",
                    label=label(m))
    ax.set_xlabel("horizon (s)")
    ax.set_ylabel("L2 at step (cm)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_vs_ratio(runs: list[dict], path: Path, baseline: dict | None = None) -> None:
    """Avg L2 / collision / intersection against the pruning ratio, one line per pruner."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    by_pruner: dict[str, list[dict]] = {}
    for m in runs:
        by_pruner.setdefault(m.get("pruner", "?"), []).append(m)
    for ax, (key, title) in zip(axes, GROUPS):
        for pruner, ms in sorted(by_pruner.items()):
            ms = sorted(ms, key=lambda m: m.get("pruning_ratio", 0.0))
            ax.plot([100 * m.get("pruning_ratio", 0.0) for m in ms],
                    [(m.get(key) or {}).get("avg") for m in ms], marker="o", label=pruner)
        if baseline is not None and (baseline.get(key) or {}).get("avg") is not None:
            ax.axhline(baseline[key]["avg"], color="k", ls="--", lw=1, label="unpruned")
        ax.set_title(f"{title} (Avg.)", fontsize=10)
        ax.set_xlabel("visual tokens pruned (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise DataError(f"no metrics.json in {run_dir}: run `fastdrivevla replay` "
                        "(or merge) first")
    return json.loads(path.read_text())


def write_run_report(out_dir: Path, metrics: dict, baseline=None) -> None:
    """report.md and l2_horizon.png for one run; `baseline` is a run dir or metrics dict."""
    base = load_metrics(baseline) if isinstance(baseline, (str, Path)) else baseline
    out_dir = Path(out_dir)
    (out_dir / "report.md").write_text(markdown([metrics], base), encoding="utf-8")
    plot_l2_horizon(([base] if base else []) + [metrics], out_dir / "l2_horizon.png")


def compare(run_dirs: list, out_dir, baseline=None) -> Path:
    """One report over many runs (sorted by pruner then ratio) plus the ratio plots."""
    runs = sorted((load_metrics(d) for d in run_dirs),
                  key=lambda m: (m.get("pruning_ratio", 0.0), m.get("pruner", "")))
    if not runs:
        raise DataError("report needs at least one run directory")
    base = load_metrics(baseline) if baseline else None
    conventions = {m["convention"] for m in runs + ([base] if base else [])}
    if len(conventions) > 1:
        raise DataError(f"runs use different metric conventions {sorted(conventions)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(runs, base, "Pruning comparison"), encoding="utf-8")
    plot_l2_horizon(([base] if base else []) + runs, out / "l2_horizon.png")
    plot_vs_ratio(runs, out / "metrics_vs_ratio.png", base)
    return out / "report.md"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="replay run directories (each with metrics.json)")
    p.add_argument("--out", required=True, help="directory for report.md and plots")
    p.add_argument("--baseline", help="unpruned run directory for the Rel. column")


def run(args: argparse.Namespace) -> int:
    print(f"wrote {compare(args.runs, args.out, args.baseline)}")
    return 0
