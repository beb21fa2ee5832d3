"""Efficiency benchmarks: FLOPs, wall clock and memory per stage for every pruner and ratio
(paper Table 4), the prefill scaling curve, and their reports. See benchmarks/README.md."""

__all__ = ["run_bench", "run_scaling", "ScalingPoint"]


def __getattr__(name: str):
    """Import runner/scaling (and torch) on first use, so `bench --help` stays fast."""
    if name == "run_bench":
        from fastdrivevla_ros.bench.runner import run_bench

        return run_bench
    if name in ("run_scaling", "ScalingPoint"):
        from fastdrivevla_ros.bench import scaling

        return getattr(scaling, name)
    raise AttributeError(name)
