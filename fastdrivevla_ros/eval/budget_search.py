"""Per-view token budgets by TPE (Prune2Drive's per-view rates), `fastdrivevla search-budgets`.

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

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.files import write_text

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


SEARCH_SETTINGS = "search_settings.json"   # what a search folder's trials were replayed with


def search_budgets(bag, engine, out_dir, trials: int = 20, lam: float = DEFAULT_LAMBDA,
                   seed: int = 0, limit: int | None = None, rate_range=RATE_RANGE,
                   progress: bool = True, model: str = "") -> SearchResult:
    """TPE over per-view retention rates of `engine.settings.cameras`, each trial a replay of
    `bag` (first `limit` keyframes) into out_dir/trial_NNNN, after one unpruned replay into
    out_dir/reference that sets the L2 scale. Returns the best trial.

    A rerun into the same out_dir resumes its trials (same seed: same rates) and is refused
    when it was searched with another bag, --limit, lambda, seed, rate range or cameras.
    model: the model's path or hub id, recorded (with its content digest) in each run."""
    import optuna
    from tqdm import tqdm

    from fastdrivevla_ros.eval.replay import replay_bag

    check_search(trials, lam, rate_range, limit)
    cameras = list(engine.settings.cameras)
    out_dir = Path(out_dir)
    claim_search(out_dir, search_settings(bag, cameras, lam, seed, limit, rate_range))
    done: list[Trial] = []

    def replay_l2(rates: list[float], run_dir: Path) -> tuple[float, dict]:
        engine.configure(view_ratios=tuple(1.0 - r for r in rates))
        metrics = replay_bag(bag, engine, run_dir, limit=limit, progress=False, model=model)
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

    optuna.logging.set_verbosity(optuna.logging.ERROR)    # a failing trial: our one line
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    best = next(t for t in done if t.number == study.best_trial.number)
    return SearchResult(cameras, best, done, reference, lam, seed)


def search_settings(bag, cameras, lam, seed, limit, rate_range) -> dict:
    """What every trial of a search folder depends on beyond each replay's own manifest."""
    from fastdrivevla_ros.eval.run_folder import bag_id

    return {"bag_id": bag_id(bag), "cameras": list(cameras), "lambda": float(lam),
            "seed": int(seed), "limit": limit, "rate_range": [float(v) for v in rate_range]}


def check_search_folder(out_dir, settings: dict) -> bool:
    """Raise ConfigError listing the differences if out_dir holds a search made with other
    settings (nothing is written); True if it holds this search (a resume)."""
    from fastdrivevla_ros.eval.run_folder import manifest_differences

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory")
    path = out_dir / SEARCH_SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is unreadable ({e}); use another --out") from e
        diff = manifest_differences(old, settings, tuple(settings))
        if diff:
            raise ConfigError(f"{out_dir} holds a budget search with other settings (folder != "
                              f"now: {'; '.join(diff)}); rerun with the same settings or use "
                              "another --out")
        return True
    if out_dir.exists() and (out_dir / "reference").exists():
        raise ConfigError(f"{out_dir} holds a budget search without {SEARCH_SETTINGS} (an "
                          "older one); use another --out")
    return False


def claim_search(out_dir: Path, settings: dict) -> None:
    """check_search_folder, then record the settings (atomically) before the first trial."""
    from fastdrivevla_ros.files import write_json

    if not check_search_folder(out_dir, settings):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / SEARCH_SETTINGS, settings)


def check_search(trials: int, lam: float, rate_range, limit: int | None = None) -> None:
    low, high = rate_range
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
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
    write_text(path, header + body)
    return path


def write_search_json(result: SearchResult, path) -> Path:
    """search.json: the reference run, every trial and the best per-view ratios."""
    path = Path(path)
    write_text(path, json.dumps(
        {"cameras": result.cameras, "lambda": result.lam, "seed": result.seed,
         "objective": "-l2_avg_m / reference_l2_m - lambda * sum(rates)",
         "reference_l2_m": result.reference_l2_m, "best": asdict(result.best),
         "view_ratios": result.view_ratios,
         "trials": [asdict(t) for t in result.trials]}, indent=1))
    return path
