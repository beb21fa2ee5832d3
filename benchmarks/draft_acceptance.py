"""How often a draft source guesses the reply: replay a real scene with each `draft` setting.

    python benchmarks/draft_acceptance.py --model DIR --bag BAG [--views 6] [--limit N]

One engine, the bag's keyframes in order (one stream per scene, as the replay evaluator runs
them), the real constrained reply. Prints per draft source: decode passes, draft tokens and
accepted tokens per plan, and whether every reply equals the one without a draft (the runs are
sequential: time them with `fastdrivevla bench --plan-drafts`, which interleaves).
A random (tiny) model writes numbers no driving guess predicts: its acceptance says nothing
about a trained planner's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCES = ("none", "kinematic", "previous")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--bag", required=True, help="a bag written by `fastdrivevla convert`")
    p.add_argument("--views", type=int, choices=[1, 6], default=6)
    p.add_argument("--limit", type=int, help="first N keyframes")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from fastdrivevla_ros.eval.replay import replay_bag
    from fastdrivevla_ros.vla.engine import DrivingVLA
    from fastdrivevla_ros.vla.prompt import CAMERAS

    torch.set_num_threads(args.threads)
    engine = DrivingVLA.from_pretrained(args.model, cameras=CAMERAS[:args.views],
                                        constrained=True)
    rows, texts = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in SOURCES:
            engine.configure(draft=source)
            replay_bag(args.bag, engine, Path(tmp) / source, limit=args.limit, progress=False)
            lines = [json.loads(x) for x in
                     (Path(tmp) / source / "predictions.jsonl").read_text().splitlines()]
            texts[source] = [r["text"] for r in lines]
            drafted = sum(r["draft_tokens"] for r in lines)
            accepted = sum(r["accepted_tokens"] for r in lines)
            rows.append((source, len(lines),
                         statistics.mean(r["decode_passes"] for r in lines),
                         drafted / len(lines), accepted / len(lines),
                         accepted / drafted if drafted else None,
                         texts[source] == texts["none"]))
    print("| draft | plans | decode passes / plan | draft tokens / plan | accepted / plan "
          "| acceptance | same replies as none |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for source, n, passes, drafted, accepted, rate, same in rows:
        share = "–" if rate is None else f"{rate:.0%}"
        print(f"| {source} | {n} | {passes:.1f} | {drafted:.1f} | {accepted:.1f} | {share} "
              f"| {same} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
