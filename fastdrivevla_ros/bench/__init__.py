"""Efficiency benchmarks: FLOPs, wall clock and memory per stage for every pruner and ratio
(paper Table 4), the prefill scaling curve, and their reports. See benchmarks/README.md."""

from fastdrivevla_ros.bench.runner import run_bench
from fastdrivevla_ros.bench.scaling import ScalingPoint, run_scaling

__all__ = ["run_bench", "run_scaling", "ScalingPoint"]
