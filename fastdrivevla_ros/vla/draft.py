"""Draft waypoints for speculative decoding: small pure functions of data the caller has.

A draft is only a guess. The engine verifies it in one pass and keeps exactly the tokens plain
greedy decoding would have chosen, so a draft changes the cost of a plan, never its reply.
Sources: `kinematic` (constant speed and yaw rate from the ego history) and `previous` (the
stream's last plan moved into the current ego frame and time; the caller keeps it per stream).
"""

from __future__ import annotations

import math
import re

import numpy as np

from fastdrivevla_ros.vla.prompt import EgoHistory, NUM_WAYPOINTS, PLANNING_HEADER, \
    WAYPOINT_DT

_NUMBER = re.compile(r"-?\d+\.\d\d")          # a finished number: the grammar's two decimals
_REPLY_START = "<PLANNING>" + PLANNING_HEADER


def kinematic_draft(history: EgoHistory | None) -> np.ndarray:
    """[6, 2] waypoints at constant speed and yaw rate, both read from the ego history.

    history: past states in the current ego frame at 0.5 s, the last one now. Speed: the last
    state's velocity, else its last displacement; yaw rate: the turn between the last two
    displacements. One state and no velocity: standing still."""
    states = history.states if history is not None else []
    pts = np.array([(s.x, s.y) for s in states], dtype=float).reshape(-1, 2)
    steps = np.diff(pts, axis=0)
    speed = states[-1].velocity if states and states[-1].velocity is not None else \
        (float(np.hypot(*steps[-1])) / WAYPOINT_DT if len(steps) else 0.0)
    yaw_rate = 0.0
    if len(steps) >= 2 and min(np.hypot(*steps[-1]), np.hypot(*steps[-2])) > 1e-3:
        turn = math.atan2(steps[-1][1], steps[-1][0]) - math.atan2(steps[-2][1], steps[-2][0])
        yaw_rate = math.remainder(turn, math.tau) / WAYPOINT_DT
    t = WAYPOINT_DT * np.arange(1, NUM_WAYPOINTS + 1)
    if abs(yaw_rate) < 1e-6:
        return np.stack([speed * t, np.zeros_like(t)], -1)
    radius = speed / yaw_rate                   # arc of constant curvature from the origin
    return np.stack([radius * np.sin(yaw_rate * t), radius * (1 - np.cos(yaw_rate * t))], -1)


def previous_draft(waypoints: np.ndarray, pose_then: tuple[float, float, float],
                   pose_now: tuple[float, float, float], elapsed_s: float) -> np.ndarray:
    """[6, 2] the previous plan, moved into the current ego frame and time.

    waypoints: [6, 2] the plan made `elapsed_s` ago, in the ego frame of then; pose_then /
    pose_now: (x, y, yaw) of the ego in any one fixed frame (odometry, map). The plan is read
    as a path in time (origin at 0 s), sampled at elapsed + 0.5 k (the last step extrapolated),
    then carried from the old ego frame into the current one."""
    path = np.vstack([[0.0, 0.0], np.asarray(waypoints, dtype=float).reshape(-1, 2)])
    times = WAYPOINT_DT * np.arange(len(path))
    want = elapsed_s + WAYPOINT_DT * np.arange(1, NUM_WAYPOINTS + 1)
    inside = np.stack([np.interp(want, times, path[:, i]) for i in range(2)], -1)
    velocity = (path[-1] - path[-2]) / WAYPOINT_DT
    beyond = path[-1] + (want - times[-1])[:, None] * velocity
    moved = np.where((want > times[-1])[:, None], beyond, inside)
    return _frame_change(moved, pose_then, pose_now)


def _frame_change(points: np.ndarray, src: tuple, dst: tuple) -> np.ndarray:
    """points [N, 2] in the frame of pose `src` -> the frame of pose `dst` (x, y, yaw each)."""
    def rot(a):
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    fixed = points @ rot(src[2]).T + np.asarray(src[:2], dtype=float)
    return (fixed - np.asarray(dst[:2], dtype=float)) @ rot(dst[2])


def draft_continuation(text: str, draft: np.ndarray | str, one_number: bool = False) -> str:
    """The draft's text from where the reply `text` stands ('' = nothing to draft here).

    draft: [N, 2] waypoints (written with two decimals) or a reply text (its numbers as
    written). Numbers the reply has finished are its own; the draft supplies the rest, so after
    the model disagrees with a number the draft resumes at the next number boundary.
    one_number: stop after the first number the continuation finishes (a draft that just
    failed costs little).
    """
    done = _numbers(text)
    numbers = _numbers(draft) if isinstance(draft, str) else \
        [f"{v:.2f}" for v in np.asarray(draft, dtype=float).reshape(-1)]
    if len(done) > len(numbers) or not all(_NUMBER.fullmatch(n) for n in numbers):
        return ""
    numbers = done + numbers[len(done):]
    points = ", ".join(f"[{x}, {y}]" for x, y in zip(numbers[::2], numbers[1::2]))
    reply = f"{_REPLY_START}{points}</PLANNING>"
    if not reply.startswith(text):
        return ""                     # mid-number where the model disagreed: no guess here
    rest = reply[len(text):]
    if one_number:
        ends = [m.end() for m in _NUMBER.finditer(reply, len(_REPLY_START)) if m.end() > len(text)]
        rest = reply[len(text):ends[0]] if ends else rest
    return rest


def _numbers(reply: str) -> list[str]:
    """The finished numbers of a reply (text), as written."""
    return _NUMBER.findall(reply[len(_REPLY_START):]) if reply.startswith(_REPLY_START) else []


class PreviousPlan:
    """One stream's last plan, kept by its caller (the node, the replay), never by the engine.

    `draft(pose, stamp_s)` moves it to now (None when there is none, no pose, or it is older
    than the plan's horizon: the engine then drafts kinematically)."""

    def __init__(self):
        self.waypoints: np.ndarray | None = None
        self.pose: tuple[float, float, float] | None = None
        self.stamp_s = 0.0

    def remember(self, waypoints: np.ndarray | None, pose, stamp_s: float) -> None:
        """Keep `waypoints` [6, 2] planned at `stamp_s` from `pose` (x, y, yaw); None forgets."""
        ok = waypoints is not None and pose is not None
        self.waypoints = np.asarray(waypoints, dtype=float) if ok else None
        self.pose, self.stamp_s = (tuple(pose), stamp_s) if ok else (None, 0.0)

    def draft(self, pose, stamp_s: float) -> np.ndarray | None:
        """[6, 2] the last plan moved to `pose` and `stamp_s`, or None."""
        elapsed = stamp_s - self.stamp_s
        fresh = 0 <= elapsed <= NUM_WAYPOINTS * WAYPOINT_DT
        if self.waypoints is None or pose is None or not fresh:
            return None
        return previous_draft(self.waypoints, self.pose, tuple(pose), elapsed)
