"""`fastdrivevla search-budgets`: per-view token budgets by TPE (Prune2Drive's per-view rates).

Prune2Drive (`scripts/run_drive_nni.py`, `drive_nni.py`) searches one retention rate
r_i ~ U[0.1, 1.0] per camera view with a TPE tuner, maximising task quality minus a token
penalty (0.5 lang + 0.5 acc - 0.03 * sum_i r_i on DriveLM, a quality score in [0, 1]). Here the
task is open-loop planning, measured by replaying a validation bag (eval/replay.py). L2 in
metres has no fixed scale (it depends on the model and the keyframes), so it is normalised by
the UNPRUNED run's L2 on the same keyframes, replayed once before the search:

    objective(r) = -L2_avg(r) / L2_avg(unpruned) - lambda * sum_i r_i

The quality term is -1 for a trial as good as the unpruned model; lambda = 0.03 then trades
keeping one whole view (r_i = 1) against a 3% rise in L2, the same order as Prune2Drive's
trade of a full view against 0.03 of a [0, 1] score. Each trial prints both terms. Sampling
uses optuna's seeded TPESampler. View i keeps floor(N_i * r_i) tokens, i.e. the engine's
per-view pruning ratio is p_i = 1 - r_i (`view_ratios`). The best rates are written into a
ROS 2 parameter YAML (`/**: ros__parameters:` with `pruner`, `cameras`, `view_ratios`), the
layout of config/drive.yaml, plus `search.json` with the reference run and every trial.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from fastdrivevla_ros.errors import ConfigError, DataError

DEFAULT_LAMBDA = 0.03        # Prune2Drive's token penalty per unit of summed retention rate
RATE_RANGE = (0.1, 1.0)      # Prune2Drive's search space per view


@dataclass
class Trial:
    """One evaluated set of per-view retention rates."""

    number: int
    rates: list[float]
    l2_avg_m: float
    l2_relative: float        # l2_avg_m / the unpruned run's L2 (the quality term's size)
    penalty: float
    objective: float
    tokens_kept_mean: float | None = None
    run_dir: str = ""


@dataclass
class SearchResult:
    """The best per-view retention rates and every trial, in the cameras' order."""

    cameras: list[str]
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    reference_l2_m: float = float("nan")     # L2 of the unpruned run on the same keyframes
    lam: float = DEFAULT_LAMBDA
    seed: int = 0

    @property
    def view_ratios(self) -> list[float]:
        """Per-view PRUNING ratios for the engine / node (1 - retention rate)."""
        return [round(1.0 - r, 4) for r in self.best.rates]


def planning_l2(metrics: dict) -> float:
    """L2 (avg over 1/2/3 s, metres) of a replay's metrics.json; needs scored samples."""
    l2 = (metrics.get("l2_cm") or {}).get("avg")
    if l2 is None or not metrics.get("samples"):
        raise DataError("the validation run scored no sample (none has a full 3 s future); "
                        "use more keyframes (--limit) or a longer bag")
    return float(l2) / 100.0


def search_budgets(bag, engine, out_dir, trials: int = 20, lam: float = DEFAULT_LAMBDA,
                   seed: int = 0, limit: int | None = None, rate_range=RATE_RANGE,
                   progress: bool = True) -> SearchResult:
    """TPE over per-view retention rates of `engine.settings.cameras`, each trial a replay of
    `bag` (first `limit` keyframes) into out_dir/trial_NNNN, after one unpruned replay into
    out_dir/reference that sets the L2 scale. Returns the best trial."""
    import optuna
    from tqdm import tqdm

    from fastdrivevla_ros.eval.replay import replay_bag

    _check_search(trials, lam, rate_range)
    cameras = list(engine.settings.cameras)
    out_dir = Path(out_dir)
    done: list[Trial] = []

    def replay_l2(rates: list[float], run_dir: Path) -> tuple[float, dict]:
        engine.configure(view_ratios=tuple(1.0 - r for r in rates))
        metrics = replay_bag(bag, engine, run_dir, limit=limit, progress=False)
        return planning_l2(metrics), metrics

    reference, _ = replay_l2([1.0] * len(cameras), out_dir / "reference")
    if reference <= 0:
        raise DataError("the unpruned run has L2 0 m; there is nothing to normalise against")
    tqdm.write(f"reference (unpruned): L2 {reference:.4f} m")

    def objective(trial: "optuna.Trial") -> float:
        rates = [trial.suggest_float(f"rate_{cam}", *rate_range) for cam in cameras]
        run_dir = out_dir / f"trial_{trial.number:04d}"
        l2, metrics = replay_l2(rates, run_dir)
        relative, penalty = l2 / reference, lam * sum(rates)
        done.append(Trial(trial.number, [round(r, 6) for r in rates], l2, relative, penalty,
                          -relative - penalty, metrics.get("tokens_kept_mean"), str(run_dir)))
        tqdm.write(f"trial {trial.number}: rates {' '.join(f'{r:.2f}' for r in rates)} | "
                   f"L2 {l2:.4f} m = {relative:.4f} x unpruned | penalty {penalty:.4f} | "
                   f"objective {-relative - penalty:.4f}")
        return -relative - penalty

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    best = next(t for t in done if t.number == study.best_trial.number)
    return SearchResult(cameras, best, done, reference, lam, seed)


def _check_search(trials: int, lam: float, rate_range) -> None:
    low, high = rate_range
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if not math.isfinite(lam) or lam < 0:
        raise ConfigError(f"--lambda must be a finite number >= 0, got {lam}")
    if not 0.0 < low < high <= 1.0:
        raise ConfigError("retention rate range must satisfy 0 < low < high <= 1, "
                          f"got {rate_range}")


def write_config(result: SearchResult, path, pruner: str, base: dict | None = None,
                 settings: dict | None = None) -> Path:
    """ROS 2 parameter YAML with the searched `view_ratios` (per-view pruning ratios, in the
    order of `cameras`) on top of `base` parameters (e.g. config/drive.yaml's) and the
    `settings` the budgets were searched with (model, resolution: token counts depend on it)."""
    params = dict(base or {})
    params.update(settings or {})
    params.update(pruner=pruner, cameras=list(result.cameras), view_ratios=result.view_ratios)
    rates = ", ".join(f"{c}={r:.3f}" for c, r in zip(result.cameras, result.best.rates))
    header = (f"# Per-view token budgets found by `fastdrivevla search-budgets` (TPE, "
              f"{len(result.trials)} trials, seed {result.seed}, lambda {result.lam}).\n"
              f"# retention rates: {rates}\n"
              f"# objective {result.best.objective:.4f} = -L2 / unpruned L2 "
              f"({result.best.l2_avg_m:.4f} m / {result.reference_l2_m:.4f} m) - penalty "
              f"{result.best.penalty:.4f}; view_ratios = 1 - rate (pruning ratio per view)\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False,
                          default_flow_style=None)
    path.write_text(header + body)
    return path


def read_base_config(path) -> dict:
    """ros__parameters of an existing node YAML (config/drive.yaml layout)."""
    from fastdrivevla_ros.pipeline.params import load_parameter_file

    return load_parameter_file(path)


# ------------------------------------------------------------------------------ CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.vla.prompt import CAMERAS

    p.add_argument("bag", help="validation bag written by `fastdrivevla convert`")
    p.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint directory or hub id")
    p.add_argument("--pruner", default="tfps", help="pruner whose per-view budgets are searched")
    p.add_argument("--cameras", nargs="+", default=list(CAMERAS), help="views (one rate each)")
    p.add_argument("--trials", type=int, default=20, help="TPE trials (Prune2Drive: 1000)")
    p.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA,
                   help="token penalty per unit of summed retention rate; the quality term "
                        "is -L2 / (the unpruned run's L2), so 0.03 trades a whole view for 3%% L2")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed")
    p.add_argument("--limit", type=int, help="only the first N keyframes of the bag per trial")
    p.add_argument("--min-rate", type=float, default=RATE_RANGE[0],
                   help="lowest retention rate (kept share) a view may get")
    p.add_argument("--max-rate", type=float, default=RATE_RANGE[1],
                   help="highest retention rate a view may get")
    p.add_argument("--out", required=True, help="directory for trial runs and search.json")
    p.add_argument("--config-out", help="YAML to write (default OUT/view_budgets.yaml)")
    p.add_argument("--base-config", help="node YAML whose parameters the output starts from")
    p.add_argument("--max-pixels", type=int, default=512 * 512,
                   help="per-image pixel budget before the 28-px token grid")
    p.add_argument("--image-size", help="fixed resize WxH, e.g. 1596x1596 (3,249 tokens)")
    p.add_argument("--max-new-tokens", type=int, default=320, help="decode budget per plan")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=True,
                   help="grammar-constrained decoding (always a parseable plan)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model weights dtype")
    p.add_argument("--attn-implementation", default="sdpa",
                   choices=["sdpa", "eager", "flash_attention_2"], help="attention kernel")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size must be WxH, got {text!r}") from None
    return w, h


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.vla.engine import DrivingVLA

    base = read_base_config(args.base_config) if args.base_config else None
    _check_search(args.trials, args.lam, (args.min_rate, args.max_rate))
    from fastdrivevla_ros.data.bag_reader import BagFrames

    len(BagFrames(args.bag))          # a missing or broken bag fails before the model loads
    engine = DrivingVLA.from_pretrained(
        args.model, dtype=args.dtype, device=args.device,
        attn_implementation=args.attn_implementation, pruner=args.pruner,
        cameras=tuple(args.cameras), max_pixels=args.max_pixels,
        image_size=_parse_size(args.image_size), max_new_tokens=args.max_new_tokens,
        constrained=args.constrained)
    result = search_budgets(args.bag, engine, args.out, args.trials, args.lam, args.seed,
                            args.limit, (args.min_rate, args.max_rate),
                            progress=not args.no_progress)
    out = Path(args.out)
    (out / "search.json").write_text(json.dumps(
        {"cameras": result.cameras, "lambda": result.lam, "seed": result.seed,
         "objective": "-l2_avg_m / reference_l2_m - lambda * sum(rates)",
         "reference_l2_m": result.reference_l2_m, "best": asdict(result.best),
         "view_ratios": result.view_ratios,
         "trials": [asdict(t) for t in result.trials]}, indent=1))
    w, h = engine.settings.image_size or (0, 0)
    settings = {"model": str(args.model), "max_pixels": args.max_pixels, "image_width": w,
                "image_height": h}
    path = write_config(result, args.config_out or out / "view_budgets.yaml", args.pruner, base,
                        settings)
    rates = ", ".join(f"{c} {r:.2f}" for c, r in zip(result.cameras, result.best.rates))
    print(f"best of {len(result.trials)} trials: retention {rates}; objective "
          f"{result.best.objective:.4f} (L2 {result.best.l2_avg_m:.3f} m, unpruned "
          f"{result.reference_l2_m:.3f} m); wrote {path}")
    return 0
