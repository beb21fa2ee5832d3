"""Parse a `<PLANNING>` reply into 6 waypoints, never raising (Impromptu-VLA's parser, stricter)."""

from __future__ import annotations

import math
import re

import numpy as np

from fastdrivevla_ros.vla.prompt import NUM_WAYPOINTS

_BLOCK = re.compile(r"<PLANNING>(.*?)</PLANNING>", re.S)
_BRACKETS = re.compile(r"\[([^\]]+)\]")
_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_POINT = re.compile(rf"^{_NUMBER},{_NUMBER}$")
MAX_ABS_METRES = 1000.0   # beyond this a "waypoint" is garbage, not a plan


def parse_planning(text: str) -> tuple[np.ndarray, str, str]:
    """Returns (waypoints [6, 2] float64, status, reason). status is 'ok' or 'parse_failed';
    on failure waypoints are zeros (as Impromptu-VLA counts them) and reason says why."""
    zeros = np.zeros((NUM_WAYPOINTS, 2))
    match = _BLOCK.search(text or "")
    if match is None:
        return zeros, "parse_failed", "no complete <PLANNING>...</PLANNING> block"
    points = []
    for inner in _BRACKETS.findall(match.group(1)):
        if inner.replace(" ", "") == "x,y":   # the "[x, y]:" format header
            continue
        m = _POINT.match(inner)
        if m is None:
            return zeros, "parse_failed", f"not an [x, y] number pair: [{inner[:40]}]"
        points.append((float(m.group(1)), float(m.group(2))))
    if len(points) != NUM_WAYPOINTS:
        return zeros, "parse_failed", f"expected {NUM_WAYPOINTS} waypoints, found {len(points)}"
    arr = np.asarray(points, dtype=np.float64)
    if not all(math.isfinite(v) and abs(v) <= MAX_ABS_METRES for v in arr.flat):
        return zeros, "parse_failed", f"waypoint coordinate beyond ±{MAX_ABS_METRES:g} m"
    return arr, "ok", ""
