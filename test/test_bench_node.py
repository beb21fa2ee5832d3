"""benchmarks/node_throughput.py drives the node's real worker and planner without ROS."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("node_throughput",
                                                  REPO / "benchmarks" / "node_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_node_throughput_plans_newest_sets_and_drops_the_rest(tiny_model_dir):
    bench = _load_script()
    report = bench.run_node_throughput(tiny_model_dir, duration_s=1.5, cameras=("CAM_FRONT",),
                                       max_new_tokens=4, constrained=False,
                                       publish_heatmaps=False, sample_s=0.1)
    assert 15 <= report["sets_submitted"] <= 19                 # 12 Hz for 1.5 s
    assert report["plans"] >= 1 and report["dropped"]["failed"] == 0
    # every set is planned, superseded in the slot, or dropped as stale: none disappears
    d = report["dropped"]
    assert report["plans"] + d["superseded"] + d["stale"] + d["discarded_on_close"] == \
        report["sets_submitted"]
    assert report["latency_ms"]["median"] > 0 and report["timeline"]
    assert "plans:" in bench.summary(report)
