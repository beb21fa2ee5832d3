"""`fastdrivevla replay BAG --out RUN`: the command line of eval/replay.py.

Every setting is resolved and checked HERE, in one place, before anything is loaded: flags
override the `--budgets` YAML (a node parameter file, e.g. what `search-budgets` writes),
which overrides REPLAY_DEFAULTS. Then the bag's index is read and the run folder's manifest
compared, so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError

# defaults of the settings a --budgets YAML may also set (flags default to None = "not given")
REPLAY_DEFAULTS = {"model": None, "pruner": "none", "pruner_weights": None, "untrained": False,
                   "pruner_options": None, "pruning_ratio": 0.0, "view_ratios": None,
                   "cameras": ["CAM_FRONT"], "max_pixels": 512 * 512, "image_size": None,
                   "max_new_tokens": 320, "constrained": True, "forced_tokens": True,
                   "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"}
# node parameter (YAML) -> replay setting; image_width/image_height map to image_size
_FROM_YAML = ("model", "pruner", "pruner_weights", "untrained", "pruner_options", "pruning_ratio",
              "view_ratios", "cameras", "max_pixels", "max_new_tokens", "constrained",
              "forced_tokens", "device", "dtype", "attn_implementation")
DTYPES = ("float32", "bfloat16", "float16")
# from_pretrained keywords that are PlannerSettings fields
SETTINGS_KEYS = ("cameras", "max_pixels", "image_size", "pruning_ratio", "view_ratios",
                 "max_new_tokens", "constrained", "forced_tokens")


def _pruner_names() -> list[str]:
    from fastdrivevla_ros.pruning.registry import PRUNERS

    return sorted(PRUNERS)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.eval.metrics import CONVENTIONS, DEFAULT_CONVENTION

    d = REPLAY_DEFAULTS
    p.add_argument("bag", help="bag directory written by `fastdrivevla convert`")
    p.add_argument("--out", required=True, help="run directory; resumed if it holds the same "
                   "run (same settings), refused if it holds another")
    p.add_argument("--model", help="Qwen2.5-VL checkpoint directory or hub id (safetensors "
                   "only); required unless --ground-truth-as-prediction or the YAML sets it")
    p.add_argument("--pruner", choices=_pruner_names(), metavar="NAME",
                   help=f"visual-token pruner, one of: {', '.join(_pruner_names())} "
                   f"(default: the YAML's, else {d['pruner']})")
    p.add_argument("--pruning-ratio", type=float, metavar="P",
                   help="fraction of visual tokens pruned in every view, 0 <= P < 1 (K = "
                   "floor(N*(1-P)) kept); required with a pruner unless per-view ratios are "
                   f"given (default: the YAML's, else {d['pruning_ratio']})")
    p.add_argument("--pruner-weights", metavar="DIR",
                   help="trained weights directory of a learned pruner (recon)")
    p.add_argument("--untrained", action="store_true", default=None,
                   help="run a learned pruner (recon) without weights: random scores, for "
                   "smoke tests and timing only")
    p.add_argument("--pruner-options", metavar="JSON",
                   help='pruner constructor options as a JSON object, e.g. \'{"layer": 3}\' '
                   "(fastv)")
    p.add_argument("--view-ratios", type=float, nargs="+", metavar="P",
                   help="per-camera pruning ratios in --cameras order (Prune2Drive budgets; "
                   "replace --pruning-ratio per view) (default: the YAML's, else none)")
    p.add_argument("--budgets", metavar="YAML",
                   help="node parameter YAML, e.g. from `fastdrivevla search-budgets`: its "
                   "pruner, pruner_weights, untrained, pruner_options, pruning_ratio, "
                   "view_ratios, cameras, model, max_pixels, image_width/height, "
                   "max_new_tokens, constrained, device, dtype apply unless the matching flag "
                   "is given")
    p.add_argument("--cameras", nargs="+", metavar="CAM",
                   help=f"cameras fed to the model, nuScenes channel names (default: "
                   f"{' '.join(d['cameras'])})")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="per-image pixel budget before the 28-px token grid; Impromptu-VLA: "
                   f"262144 = 336 tokens for a 1600x900 frame (default: {d['max_pixels']})")
    p.add_argument("--image-size", metavar="WxH",
                   help="fixed resize instead of --max-pixels, e.g. 1596x1596 (3,249 tokens)")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help=f"decode budget per plan (default: {d['max_new_tokens']})")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=None,
                   help="grammar-constrained decoding: always a parseable plan (default: on)")
    p.add_argument("--forced-tokens", action=argparse.BooleanOptionalAction, default=None,
                   help="with --constrained: feed the tokens the reply format fixes along with "
                        "the free ones; --no-forced-tokens decodes every token step by step "
                        "(default: on)")
    p.add_argument("--device", help=f"torch device: cpu, cuda, cuda:N, auto (default: "
                   f"{d['device']})")
    p.add_argument("--dtype", choices=DTYPES + ("auto",),
                   help=f"model weights dtype; auto = bfloat16 on CUDA (default: {d['dtype']})")
    p.add_argument("--attn-implementation", choices=("sdpa", "eager", "flash_attention_2"),
                   help=f"attention kernel (default: {d['attn_implementation']})")
    p.add_argument("--shard", default="0/1", metavar="i/n",
                   help="evaluate shard i of n (0-based), e.g. 1/4; join with `merge`")
    p.add_argument("--limit", type=int, metavar="N",
                   help="only the first N keyframes of the shard (a tiny-model replay costs "
                   "about 1.2 s per keyframe with six cameras on a 2-core CPU)")
    p.add_argument("--ground-truth-as-prediction", action="store_true",
                   help="self-check: evaluate the bag's own GT futures (no model needed)")
    p.add_argument("--baseline", metavar="RUN",
                   help="unpruned run directory for the Rel. column of report.md")
    p.add_argument("--convention", default=DEFAULT_CONVENTION, choices=sorted(CONVENTIONS),
                   help="metric convention of the headline numbers (metrics.json has all)")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="on an unusable keyframe: stop, or record it as an error and go on")
    p.add_argument("--output-bag", action="store_true",
                   help="also write predictions_bag/ (paths + heatmaps) for Foxglove / RViz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class ReplayConfig:
    """Resolved, checked replay settings (nothing loaded yet)."""

    shard: tuple[int, int]
    model: str | None
    engine: dict = field(default_factory=dict)      # DrivingVLA.from_pretrained keywords
    pruner_options: dict = field(default_factory=dict)


def resolve(args: argparse.Namespace) -> ReplayConfig:
    """Flags > --budgets YAML > defaults; every value checked; raises ConfigError."""
    from fastdrivevla_ros.eval.replay import parse_shard

    shard = parse_shard(args.shard)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.baseline:
        _check_baseline(args.baseline)
    values = _layered(args)
    if args.ground_truth_as_prediction:
        return ReplayConfig(shard, values["model"])
    if not values["model"]:
        raise ConfigError("--model is required (or --ground-truth-as-prediction)")
    _check_path(values["model"], "--model", may_be_hub_id=True)
    from fastdrivevla_ros.pruning.registry import pruner_options

    if values["pruner_weights"]:
        _check_path(values["pruner_weights"], "--pruner-weights")
    options = pruner_options(values["pruner"], values["pruner_options"],
                             values["pruner_weights"], bool(values["untrained"]))
    engine = {"dtype": values["dtype"], "device": values["device"],
              "attn_implementation": values["attn_implementation"], "pruner": values["pruner"],
              "pruner_options": options, "cameras": tuple(values["cameras"]),
              "max_pixels": values["max_pixels"], "image_size": values["image_size"],
              "pruning_ratio": values["pruning_ratio"],
              "view_ratios": tuple(values["view_ratios"]) if values["view_ratios"] else None,
              "max_new_tokens": values["max_new_tokens"], "constrained": values["constrained"],
              "forced_tokens": values["forced_tokens"]}
    _check_engine(engine)
    return ReplayConfig(shard, values["model"], engine, options)


def _check_baseline(run_dir) -> None:
    """The Rel. column's run must be a finished replay (metrics and predictions)."""
    from fastdrivevla_ros.eval.replay import PREDICTIONS
    from fastdrivevla_ros.eval.report import load_metrics

    load_metrics(run_dir)
    if not (Path(run_dir) / PREDICTIONS).is_file():
        raise ConfigError(f"--baseline {run_dir}: no {PREDICTIONS}; not a replay run directory")


def _layered(args) -> dict:
    """Each setting from its flag, else the --budgets YAML, else REPLAY_DEFAULTS."""
    from fastdrivevla_ros.pipeline.params import SPECS, resolve_device

    flags = {k: getattr(args, k) for k in REPLAY_DEFAULTS if k != "image_size"}
    flags["image_size"] = parse_size(args.image_size)
    yaml_values = _yaml_settings(args.budgets) if args.budgets else {}
    values = {key: next((layer[key] for layer in (flags, yaml_values)
                         if layer.get(key) is not None), default)
              for key, default in REPLAY_DEFAULTS.items()}
    SPECS["device"].check(values["device"])
    values["device"] = resolve_device(values["device"])
    if values["dtype"] == "auto":
        values["dtype"] = "bfloat16" if values["device"].startswith("cuda") else "float32"
    return values


def _yaml_settings(path) -> dict:
    """The replay-relevant parameters of a node YAML, each checked as the node checks it."""
    from fastdrivevla_ros.pipeline.params import SPECS, load_parameter_file

    raw = load_parameter_file(path)
    out = {}
    for key in (k for k in _FROM_YAML if k in SPECS):
        if raw.get(key) not in (None, ""):
            try:
                out[key] = SPECS[key].check(raw[key])
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
    w, h = raw.get("image_width") or 0, raw.get("image_height") or 0
    if w or h:
        out["image_size"] = (int(w), int(h))
    if "view_ratios" in out and "cameras" not in out:
        raise ConfigError(f"{path}: view_ratios need the `cameras` they belong to")
    return out


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'1596x1596' -> (1596, 1596); None/'' -> None."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size must be WxH, e.g. 1596x1596, got {text!r}") from None
    return w, h


def _check_path(value, flag: str, may_be_hub_id: bool = False) -> None:
    path = Path(str(value)).expanduser()
    looks_local = not may_be_hub_id or str(value).startswith(("/", ".", "~")) or \
        str(value).count("/") > 1
    if looks_local and not path.exists():
        raise ConfigError(f"{flag} {value}: no such file or directory")


def _check_engine(kw: dict) -> None:
    """What DrivingVLA.from_pretrained would reject, checked without loading a model."""
    from fastdrivevla_ros.pruning.registry import require_pruning
    from fastdrivevla_ros.vla.engine import PlannerSettings

    require_pruning(kw["pruner"], kw["pruning_ratio"], kw["view_ratios"])
    PlannerSettings(**{k: kw[k] for k in SETTINGS_KEYS})


def planned_manifest(bag, cfg: ReplayConfig, gt_mode: bool) -> dict:
    """The manifest replay_bag will write for `cfg`, known before the model is loaded."""
    from fastdrivevla_ros.eval.replay import run_manifest
    from fastdrivevla_ros.pruning.registry import pruner_class
    from fastdrivevla_ros.vla.engine import PlannerSettings

    if gt_mode:
        return run_manifest(bag, cfg.shard, model=cfg.model or "")
    kw = cfg.engine
    pruner = pruner_class(kw["pruner"])
    settings = PlannerSettings(**{k: kw[k] for k in SETTINGS_KEYS})
    return run_manifest(bag, cfg.shard, model=cfg.model, dtype=kw["dtype"], pruner=pruner.name,
                        keeps_all=pruner.keeps_all, settings=settings,
                        pruner_options=cfg.pruner_options)


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.eval.replay import headline, replay_bag
    from fastdrivevla_ros.eval.run_folder import check_not_busy, check_resumable

    cfg = resolve(args)
    len(BagFrames(args.bag))                       # a missing or broken bag fails now
    check_not_busy(args.out)
    check_resumable(args.out, planned_manifest(args.bag, cfg, args.ground_truth_as_prediction))
    engine = None
    if not args.ground_truth_as_prediction:
        from fastdrivevla_ros.vla.engine import DrivingVLA

        engine = DrivingVLA.from_pretrained(cfg.model, **cfg.engine)
    metrics = replay_bag(args.bag, engine, args.out, cfg.shard, args.limit,
                         gt_as_prediction=args.ground_truth_as_prediction,
                         name=args.convention, baseline=args.baseline,
                         output_bag=args.output_bag, model=cfg.model or "",
                         pruner_options=cfg.pruner_options, on_error=args.on_error,
                         progress=not args.no_progress)
    print(headline(metrics, args.out))
    return 0
