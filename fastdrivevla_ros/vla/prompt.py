"""Impromptu-VLA planning prompt (see shared/reference/algorithms.md §1) and the reply format.

The wording follows Impromptu-VLA's `pipeline_metadata.py` / `pipeline_ego_status.py`: camera
image(s), then up to 7 past ego states at 0.5 s (positions in the current ego frame, x forward,
y left, metres), each with acceleration, velocity and steering when known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT",
           "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CAMERA_PHRASES = {
    "CAM_FRONT": "front view", "CAM_FRONT_LEFT": "front-left view",
    "CAM_FRONT_RIGHT": "front-right view", "CAM_BACK": "back view",
    "CAM_BACK_LEFT": "back-left view", "CAM_BACK_RIGHT": "back-right view",
}
NUM_WAYPOINTS = 6
WAYPOINT_DT = 0.5
MAX_HISTORY = 7
PLANNING_HEADER = (
    "Predicted future movement details for the next 3 seconds (sampled at 0.5-second intervals), "
    "including BEV location in x and y directions (in meters). Positive x means forward direction "
    "while positive y means leftwards. The output is formatted as [x, y]: ")


@dataclass
class EgoState:
    """One past ego state. Position in the CURRENT ego frame (x forward, y left, metres)."""

    x: float
    y: float
    velocity: float | None = None          # m/s, forward speed
    acceleration: tuple[float, float] | None = None   # m/s^2, (forward, left)
    steering: float | None = None          # rad (CAN bus), positive = left

    def __post_init__(self):
        values = [self.x, self.y, self.velocity, self.steering, *(self.acceleration or ())]
        if any(v is not None and not math.isfinite(v) for v in values):
            raise ValueError(f"ego state has a non-finite value: {self}")


@dataclass
class EgoHistory:
    """Past ego states, oldest first, the last one being the current time (t-0.0 s)."""

    states: list[EgoState] = field(default_factory=list)

    def __post_init__(self):
        if len(self.states) > MAX_HISTORY:
            self.states = self.states[-MAX_HISTORY:]

    @classmethod
    def stationary(cls) -> "EgoHistory":
        return cls([EgoState(0.0, 0.0, 0.0, (0.0, 0.0), 0.0)])


def _format_state(offset_s: float, s: EgoState) -> str:
    parts = [f"(t-{offset_s:.1f}s) [{s.x:.2f}, {s.y:.2f}]"]
    if s.acceleration is not None:
        parts.append(f"Acceleration: X {s.acceleration[0]:.2f}, Y {s.acceleration[1]:.2f} m/s^2")
    if s.velocity is not None:
        parts.append(f"Velocity: {s.velocity:.2f} m/s")
    if s.steering is not None:
        parts.append(f"Steering angle: {s.steering:.2f} (positive: left turn)")
    return ", ".join(parts)


def history_text(history: EgoHistory) -> str:
    n = len(history.states)
    lines = [_format_state((n - 1 - i) * WAYPOINT_DT, s) for i, s in enumerate(history.states)]
    return "\n".join(lines)


def build_messages(cameras: list[str], history: EgoHistory) -> list[dict]:
    """Chat messages (one user turn) with one image entry per camera, in the given order."""
    if not cameras:
        raise ValueError("at least one camera must feed the model")
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise ValueError(f"unknown camera(s) {unknown}; use nuScenes channel names {CAMERAS}")
    if len(cameras) == 1:
        intro = f"You are an autonomous driving agent. You have access to a " \
                f"{CAMERA_PHRASES[cameras[0]]} camera image of a vehicle "
        content = [{"type": "text", "text": intro}, {"type": "image"}]
    else:
        content = [{"type": "text", "text": "You are an autonomous driving agent. You have access "
                    f"to {len(cameras)} camera images of a vehicle: "}]
        for i, cam in enumerate(cameras):
            content += [{"type": "text", "text": f"{', ' if i else ''}{CAMERA_PHRASES[cam]} "},
                        {"type": "image"}]
    n = len(history.states)
    content.append({"type": "text", "text": (
        ". Your task is to do your best to predict future waypoints for the vehicle over the next "
        f"{NUM_WAYPOINTS} timesteps, given the vehicle's intent inferred from the images. "
        f"Provided are the previous ego vehicle status recorded over the last "
        f"{(max(n, 1) - 1) * WAYPOINT_DT:.1f} seconds (at 0.5-second intervals). This includes "
        "the x and y coordinates of the ego vehicle. Positive x means forward direction while "
        "positive y means leftwards. The data is presented in the format [x, y]:\n"
        + history_text(history))})
    return [{"role": "user", "content": content}]


def format_planning(waypoints: np.ndarray) -> str:
    """The assistant reply Impromptu-VLA is trained on, for 6 (x, y) waypoints."""
    pts = ", ".join(f"[{x:.2f}, {y:.2f}]" for x, y in np.asarray(waypoints).reshape(-1, 2))
    return f"<PLANNING>{PLANNING_HEADER}{pts}</PLANNING>"


def example_texts() -> list[str]:
    """Representative prompt/reply text (used to train the tiny model's tokenizer)."""
    rng = np.random.default_rng(0)
    hist = EgoHistory([EgoState(-float(i), 0.1 * i, 5.0, (0.1, -0.2), 0.01)
                       for i in range(6, -1, -1)])
    texts = []
    for cams in (["CAM_FRONT"], list(CAMERAS)):
        for m in build_messages(cams, hist)[0]["content"]:
            if m["type"] == "text":
                texts.append(m["text"])
    texts += [format_planning(rng.normal(0, 10, (6, 2))) for _ in range(20)]
    texts.append("You are a helpful assistant. system user assistant")
    return texts
