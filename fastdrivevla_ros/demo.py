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

from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory, EgoState

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/demo", help="output directory (created)")
    p.add_argument("--model", default=None,
                   help="Qwen2.5-VL checkpoint dir or hub id; default: build the tiny random "
                        "model into OUT/tiny-model")
    p.add_argument("--pruner", default="recon", help="pruner name (see `fastdrivevla plan "
                   "--list-pruners`); recon without --pruner-weights is untrained")
    p.add_argument("--pruner-weights", default=None, help="pruner weights directory")
    p.add_argument("--pruning-ratio", type=float, default=0.5, help="fraction of tokens pruned")
    p.add_argument("--cameras", default=",".join(CAMERAS),
                   help="comma-separated cameras fed to the model")
    p.add_argument("--max-pixels", type=int, default=512 * 512, help="per-image pixel budget")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model weights dtype")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.pruning.registry import check_pruner, require_pruning
    from fastdrivevla_ros.vla.engine import DrivingVLA, PlannerSettings
    from fastdrivevla_ros.vla.tiny import make_tiny_model
    from fastdrivevla_ros.viz.heatmap import mosaic, save_png, token_overlay, with_legend

    # every argument checked before anything is built or loaded
    pruner = args.pruner
    options = {"weights": args.pruner_weights} if args.pruner_weights else {}
    if pruner == "recon" and not args.pruner_weights:
        options = {"untrained": True}   # random ReconPruner sized for this model
    check_pruner(pruner, options)
    require_pruning(pruner, args.pruning_ratio)
    cameras = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    PlannerSettings(cameras=cameras, max_pixels=args.max_pixels,
                    pruning_ratio=args.pruning_ratio)
    if options.get("untrained"):
        print("note: no --pruner-weights given: ReconPruner is untrained (random scores)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = out / "tiny-model"
        if not (model / "config.json").is_file():
            print(f"building the tiny random Qwen2.5-VL in {model} ...")
            make_tiny_model(model)
    engine = DrivingVLA.from_pretrained(
        model, dtype=args.dtype, device=args.device, pruner=pruner, pruner_options=options,
        cameras=cameras, max_pixels=args.max_pixels, pruning_ratio=args.pruning_ratio,
        constrained=True)
    images, history, meta = load_demo_frame()
    result = engine.plan(images, history)

    random_weights = args.model is None       # the tiny model built above
    (out / "plan.json").write_text(json.dumps(result.to_json(), indent=1))
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
    (out / "summary.md").write_text(summary)
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
