"""`fastdrivevla demo`: one real nuScenes keyframe (bundled) through the full pipeline, offline.

Builds the tiny random Qwen2.5-VL (unless --model is given), plans with the chosen pruner and
ratio, and writes plan.json, trajectory.png, one heatmap per camera, mosaic.png and summary.md.
With the tiny model the weights are random: the trajectory shows the plumbing, not driving skill.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fastdrivevla_ros.cli.settings import add_settings, resolve_settings
from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.files import save_figure, write_text
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"
# the demo shows pruning on all six views (the schema's defaults plan unpruned on CAM_FRONT)
DEMO_PRESETS = {"pruner": "recon", "pruning_ratio": 0.5, "cameras": CAMERAS}


def load_demo_frame(folder: Path = DEMO_DATA) -> tuple[dict, EgoHistory, dict]:
    """(images {camera: RGB array}, ego history, frame metadata) of the bundled keyframe."""
    meta_file = folder / "frame.json"
    if not meta_file.is_file():
        raise DataError(f"demo frame not found at {meta_file}")
    meta = json.loads(meta_file.read_text())
    images = {cam: np.asarray(Image.open(folder / name).convert("RGB"))
              for cam, name in meta["images"].items()}
    history = EgoHistory([EgoState(s["x"], s["y"], s.get("velocity")) for s in meta["history"]])
    return images, history, meta


def plot_trajectory(history: EgoHistory, waypoints: np.ndarray, path: Path, title: str) -> None:
    """Bird's-eye view: past ego positions and the plan (x forward = up, y left = left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    past = np.array([[s.x, s.y] for s in history.states])
    fig, ax = plt.subplots(figsize=(4, 5))
    ax.plot(-past[:, 1], past[:, 0], "o-", color="grey", label="past (0.5 s)")
    ax.plot(-waypoints[:, 1], waypoints[:, 0], "o-", color="tab:red", label="plan (0.5 s)")
    ax.add_patch(plt.Rectangle((-0.925, -1.0), 1.85, 4.084, fill=False, color="black"))
    ax.set_xlabel("-y (m, right)")
    ax.set_ylabel("x (m, forward)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=120)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.vla.settings import ENGINE_KEYS

    p.add_argument("--out", default="out/demo", help="output directory (created)")
    add_settings(p, ENGINE_KEYS, presets=DEMO_PRESETS, help_overrides={
        "model": "Qwen2.5-VL checkpoint dir or hub id; unset: build the tiny random model into "
                 "OUT/tiny-model",
        "pruner": "pruner name (see `fastdrivevla plan --list-pruners`); recon without "
                  "--pruner-weights is untrained"})


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.pruning.registry import require_pruning
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.vla.settings import engine_kwargs, ENGINE_KEYS
    from fastdrivevla_ros.vla.tiny import make_tiny_model
    from fastdrivevla_ros.viz.heatmap import mosaic, save_png, token_overlay, with_legend

    # every argument checked before anything is built or loaded
    if (args.pruner or DEMO_PRESETS["pruner"]) == "recon" and not args.pruner_weights \
            and args.untrained is None and not args.config:
        args.untrained = True           # random ReconPruner sized for this model
        print("note: no --pruner-weights given: ReconPruner is untrained (random scores)")
    values = resolve_settings(args, ENGINE_KEYS)
    kwargs = engine_kwargs(values)
    require_pruning(values["pruner"], values["pruning_ratio"], values["view_ratios"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = values["model"] or None
    if model is None:
        model = out / "tiny-model"
        if not (model / "config.json").is_file():
            print(f"building the tiny random Qwen2.5-VL in {model} ...")
            make_tiny_model(model)
    engine = DrivingVLA.from_pretrained(model, **kwargs)
    images, history, meta = load_demo_frame()
    result = engine.plan(images, history)

    random_weights = not values["model"]       # the tiny model built above
    write_text(out / "plan.json", json.dumps(result.to_json(), indent=1))
    title = f"{result.pruner} @ {result.pruning_ratio:.2f}: {result.status}"
    if random_weights:
        title = f"RANDOM WEIGHTS (tiny test model): not a real plan\n{title}"
    plot_trajectory(history, result.waypoints, out / "trajectory.png", title)
    scored = any(v.scores is not None for v in result.views)
    for view in result.views:
        save_png(with_legend(token_overlay(view), view.scores is not None),
                 out / f"heatmap_{view.camera}.png")
    save_png(with_legend(mosaic(result.views), scored), out / "mosaic.png")
    summary = summary_markdown(result, meta, str(model), random_weights)
    write_text(out / "summary.md", summary)
    print(summary)
    print(f"wrote {out}/plan.json, trajectory.png, heatmap_*.png, mosaic.png, summary.md")
    return 0


RANDOM_NOTE = ("**The model's weights are random** (the tiny test model): the waypoints and "
               "token choices show that the pipeline runs, not how a trained planner drives. "
               "Pass --model with real Qwen2.5-VL weights for a real plan.")


def summary_markdown(result, meta: dict, model: str, random_weights: bool = False) -> str:
    t = result.timings_ms
    lines = [
        "# fastdrivevla demo", "",
        *([RANDOM_NOTE, ""] if random_weights else []),
        f"- frame: {meta.get('source', '?')}",
        f"- model: {model}",
        f"- pruner: {result.pruner}, ratio {result.pruning_ratio:.2f}: "
        f"{result.tokens_kept}/{result.tokens_total} visual tokens kept",
        f"- status: {result.status}{' (' + result.reason + ')' if result.reason else ''}",
        "- waypoints (x fwd, y left, m): " + ", ".join(
            f"[{x:.2f}, {y:.2f}]" for x, y in result.waypoints),
        "", "| stage | ms |", "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in t.items()], "",
        "| camera | grid | kept |", "|---|---|---|",
        *[f"| {v.camera} | {v.grid[0]}x{v.grid[1]} | {v.num_kept}/{v.num_tokens} |"
          for v in result.views],
    ]
    return "\n".join(lines) + "\n"
