"""A run folder's predictions and the metrics derived from them.

  predictions.jsonl   one line per keyframe: token, waypoints, status, timings, per-step metrics
  metrics.json        samples, convention, l2_cm, collision_pct, intersection_pct (1s/2s/3s/avg)
  report.md, *.png    the paper's Table 1 layout and plots (eval/report.py, which imports
                      this module; never the other way round)

Each record is appended and flushed at once, so a killed run resumes where it stopped (a
truncated last line is discarded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.eval.metrics import summarize
from fastdrivevla_ros.files import naming

PREDICTIONS, METRICS = "predictions.jsonl", "metrics.json"


class PredictionStore:
    """predictions.jsonl: append-and-flush, tolerant of a run killed mid-line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = raw.rfind(b"\n") + 1          # everything after the last newline is a torn write
        for n, line in enumerate(raw[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{self.path}:{n} is not valid JSON ({e}); only a torn LAST "
                                "line is repaired automatically") from e
            if rec.get("token") in self.records:
                raise DataError(f"{self.path}:{n} duplicates sample {rec.get('token')}")
            self.records[rec["token"]] = rec
        if good < len(raw):                  # drop the torn tail so appends start on a new line
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def __contains__(self, token: str) -> bool:
        return token in self.records

    def append(self, record: dict) -> None:
        if record["token"] in self.records:
            raise DataError(f"sample {record['token']} is already in {self.path}")
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with naming(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["token"]] = record

    def ordered(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: r["ordinal"])


def run_metrics(records: list[dict], spec_like: dict, name: str,
                throughput: float | None = None) -> dict:
    """metrics.json content from prediction records (per-sample metrics already inside)."""
    scored = [r["metrics"] for r in records if r.get("metrics")]
    out = summarize(scored, name)
    timings: dict[str, list[float]] = {}
    for r in records:
        for k, v in (r.get("timings_ms") or {}).items():
            timings.setdefault(k, []).append(float(v))
    total_ms = sum(timings.get("total", []))
    out.update({
        "frames": len(records),
        "parse_failed": sum(r["status"] == "parse_failed" for r in records),
        "errors": [r["token"] for r in records if r["status"] == "error"],
        "pruner": spec_like["pruner"], "pruning_ratio": spec_like["pruning_ratio"],
        "view_ratios": (spec_like.get("settings") or {}).get("view_ratios"),
        "model": spec_like.get("model", ""), "bag": spec_like["bag"],
        "drivable_source": sorted({r.get("drivable_source", "none") for r in records}),
        "tokens_kept_mean": _mean([r["tokens_kept"] for r in records]),
        "tokens_total_mean": _mean([r["tokens_total"] for r in records]),
        **kept_fractions(records),
        "timings_ms_mean": {k: round(float(np.mean(v)), 3) for k, v in timings.items()},
        "samples_per_s_model": round(1e3 * len(records) / total_ms, 4) if total_ms else None,
        "samples_per_s_wall": round(throughput, 4) if throughput else None,
    })
    return out


def kept_fractions(records: list[dict]) -> dict:
    """What the run really fed the LLM: mean kept fraction of visual tokens, overall and per
    camera (per-view budgets make the configured pruning_ratio meaningless on its own)."""
    overall, per_view = [], {}
    for r in records:
        if r.get("tokens_total"):
            overall.append(r["tokens_kept"] / r["tokens_total"])
        for v in r.get("views") or []:
            kept, total = _view_counts(v)
            if total:
                per_view.setdefault(v["camera"], []).append(kept / total)
    return {"kept_fraction_mean": round(float(np.mean(overall)), 4) if overall else None,
            "view_kept_fraction": {c: round(float(np.mean(f)), 4) for c, f in per_view.items()}}


def _view_counts(view: dict) -> tuple[int, int]:
    """(kept, total) of one view record: engine records carry indices, node records counts."""
    if "kept" in view and "grid" in view:
        return len(view["kept"]), int(view["grid"][0]) * int(view["grid"][1])
    return int(view.get("tokens_kept", 0)), int(view.get("tokens_total", 0))


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def _fmt(d: dict) -> str:
    return "/".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in ("1s", "2s", "3s", "avg"))


def headline(m: dict, out) -> str:
    """One line for the terminal: sample count and the three metrics at 1s/2s/3s/avg."""
    return (f"{out}: {m['samples']} samples ({m['convention']}), L2 cm {_fmt(m['l2_cm'])}, "
            f"collision % {_fmt(m['collision_pct'])}, intersection % "
            f"{_fmt(m['intersection_pct'])}, parse failures {m['parse_failed']}")
