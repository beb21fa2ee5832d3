"""Join the shard runs of one replay evaluation (`fastdrivevla merge`).

Checks that all shards 0..n-1 of the same bag, pruner and settings are present, finished, and
cover every keyframe exactly once; then writes predictions.jsonl, metrics.json, report.md and
plots as if the evaluation had run unsharded.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.eval.run_folder import MANIFEST, manifest_differences, open_run_folder, \
    write_json
from fastdrivevla_ros.eval.report import finish_run
from fastdrivevla_ros.eval.store import PREDICTIONS, PredictionStore


def _load_run(run_dir: Path) -> tuple[dict, PredictionStore]:
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise DataError(f"{run_dir} is not a replay run directory (no {MANIFEST})")
    return json.loads((run_dir / MANIFEST).read_text()), PredictionStore(run_dir / PREDICTIONS)


def _check_same_run(runs: list[tuple[dict, PredictionStore]], run_dirs: list) -> None:
    """Shards of one evaluation: manifests equal except the shard index (and convention)."""
    first = runs[0][0]
    for (m, _), d in zip(runs[1:], run_dirs[1:]):
        diff = manifest_differences(first | {"shard": None}, m | {"shard": None})
        if m.get("convention") != first.get("convention"):
            diff.append(f"convention: {first.get('convention')!r} != {m.get('convention')!r}")
        if diff:
            raise DataError(f"{run_dirs[0]} and {d} are not shards of one run "
                            f"({'; '.join(diff)}); merge shards of one run only")


def merge_runs(out_dir, run_dirs: list, baseline=None) -> dict:
    """Join shard runs of ONE evaluation into out_dir, checking nothing is missing or twice."""
    runs = [_load_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ConfigError("merge needs at least one run directory")
    _check_same_run(runs, run_dirs)
    first = runs[0][0]
    n = first["shard"][1]
    shards = sorted(m["shard"][0] for m, _ in runs)
    if any(m["shard"][1] != n for m, _ in runs) or shards != list(range(n)):
        raise DataError(f"need shards 0..{n - 1} of {n} exactly once, got {shards}")
    records, seen = [], {}
    for (manifest, store), run_dir in zip(runs, run_dirs):
        tag = f"{manifest['shard'][0]}/{n}"
        if not manifest.get("complete"):
            raise DataError(f"shard {tag} ({run_dir}) did not finish (limit or stopped); rerun it")
        missing = [t for t in manifest["expected"] if t not in store]
        if missing:
            raise DataError(f"shard {tag} lacks {len(missing)} prediction(s), e.g. {missing[:3]}; "
                            "rerun it to resume")
        for rec in store.ordered():
            if rec["token"] in seen:
                raise DataError(f"sample {rec['token']} appears in shards {seen[rec['token']]} "
                                f"and {tag}")
            seen[rec["token"]] = tag
            records.append(rec)
    records.sort(key=lambda r: r["ordinal"])
    out_dir = Path(out_dir)
    if (out_dir / PREDICTIONS).exists():
        raise DataError(f"{out_dir / PREDICTIONS} exists; merge into an empty directory")
    spec = {k: v for k, v in first.items() if k not in ("expected", "complete", "limit")} | \
        {"shard": [0, 1]}
    with open_run_folder(out_dir, spec, resumable=False):
        store = PredictionStore(out_dir / PREDICTIONS)
        for rec in records:
            store.append(rec)
        write_json(out_dir / MANIFEST, spec | {"expected": [r["token"] for r in records],
                                               "complete": True, "limit": None,
                                               "merged_from": [str(d) for d in run_dirs]})
        return finish_run(out_dir, records, spec, baseline)
