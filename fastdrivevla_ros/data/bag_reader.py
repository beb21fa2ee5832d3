"""Read converted bags back, one keyframe at a time, for offline evaluation.

Every PlanningGroundTruth message is one keyframe. Its camera images are the CompressedImage
messages nearest in header time (within MAX_CAMERA_OFFSET_S). Its ego history is built exactly
as the drive node builds it: every /ego/odometry and /ego/status message goes through the same
conversions into the same `EgoHistoryBuffer`, asked at the same instant, the stamp of the first
camera's image (the node's reference camera), so offline replay and the live node prompt alike.
The reader streams in time order with bounded memory and never drops a keyframe: a keyframe
whose images are missing raises DataError naming it.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from fastdrivevla_ros.data import topics
from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.vla.prompt import CAMERAS, EgoHistory

MAX_CAMERA_OFFSET_S = 0.2   # nuScenes cameras fire within ~45 ms of the LiDAR keyframe time


@dataclass
class DrivableGrid:
    """data [H, W] int8 (row j <-> y, column i <-> x; 0 drivable, 100 not, -1 unknown) in the
    ego frame; origin = (x, y) of cell (0, 0)'s corner; resolution in m."""

    data: np.ndarray
    resolution: float
    origin: tuple[float, float]


@dataclass
class PlanningTarget:
    """Evaluation ground truth of one keyframe, ego frame (x forward, y left, m).

    future [6, 2], valid [6] bool; agents: boxes [M, 5] = (x, y, yaw, length, width),
    steps [M] (0 = now, k = k-th future keyframe), categories [M] names, points [M] LiDAR +
    radar points of the agent's CURRENT (step 0) annotation, instances [M] tokens."""

    token: str
    future: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    categories: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    points: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    instances: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    drivable: DrivableGrid | None = None
    drivable_source: str = "none"

    @property
    def full_future(self) -> bool:
        return bool(np.all(self.valid))


@dataclass
class Frame:
    """One keyframe read from a bag. `jpegs` are the raw CompressedImage bytes per camera."""

    ordinal: int                 # position of the keyframe in the bag (0-based)
    token: str
    scene_token: str
    scene_name: str
    index_in_scene: int
    stamp_ns: int
    jpegs: dict[str, bytes]
    history: EgoHistory | None
    target: PlanningTarget
    ego_pose: tuple[float, float, float] | None = None   # (x, y, yaw) in the odometry frame

    def compressed(self, cameras=None) -> dict[str, bytes]:
        """{camera: JPEG bytes} for `cameras` (default: all present), not decoded: the engine
        decodes them at the scale the model needs (PIL draft mode)."""
        missing = [c for c in cameras or () if c not in self.jpegs]
        if missing:
            raise DataError(f"keyframe {self.token} has no {missing[0]} image in the bag")
        return {c: self.jpegs[c] for c in cameras or self.jpegs}

    def images(self, cameras=None) -> dict[str, np.ndarray]:
        """{camera: HxWx3 uint8 RGB} for `cameras` (default: all present), decoded now."""
        from PIL import Image, UnidentifiedImageError

        out = {}
        for cam in cameras or self.jpegs:
            if cam not in self.jpegs:
                raise DataError(f"keyframe {self.token} has no {cam} image in the bag")
            try:
                with Image.open(io.BytesIO(self.jpegs[cam])) as img:
                    out[cam] = np.asarray(img.convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(f"keyframe {self.token}: cannot decode {cam}: {e}") from e
        return out


def target_from_msg(msg) -> PlanningTarget:
    """PlanningGroundTruth message (rosbags or mcap_ros2 object) -> PlanningTarget."""
    future = np.array([[p.x, p.y] for p in msg.future], dtype=float).reshape(-1, 2)
    valid = np.asarray(msg.future_valid, dtype=bool)
    if future.shape != (6, 2) or valid.shape != (6,):
        raise DataError(f"ground truth {msg.sample_token}: expected 6 future points and flags, "
                        f"got {future.shape[0]} and {valid.shape[0]}")
    agents = list(msg.agents)
    steps = np.array([a.step for a in agents], dtype=int)
    boxes = np.array([[a.center.x, a.center.y, a.yaw, a.size.x, a.size.y] for a in agents],
                     dtype=float).reshape(-1, 5)
    now_points = {a.instance_token: a.num_lidar_pts + a.num_radar_pts
                  for a in agents if a.step == 0}
    grid = msg.drivable_area
    drivable = None
    if grid.info.width and grid.info.height:
        drivable = DrivableGrid(
            np.asarray(grid.data, dtype=np.int8).reshape(grid.info.height, grid.info.width),
            float(grid.info.resolution),
            (float(grid.info.origin.position.x), float(grid.info.origin.position.y)))
    return PlanningTarget(
        token=msg.sample_token, future=future, valid=valid, boxes=boxes, steps=steps,
        categories=np.array([a.category for a in agents], dtype=object),
        points=np.array([now_points.get(a.instance_token, 0) for a in agents], dtype=int),
        instances=np.array([a.instance_token for a in agents], dtype=object),
        drivable=drivable, drivable_source=msg.drivable_source)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class BagFrames:
    """Iterate the keyframes of a converted bag in time order.

    cameras: which camera images each Frame carries (default: all six);
    with_images=False skips image payloads entirely (ground-truth-only passes).
    """

    def __init__(self, bag: Path | str, cameras=None, with_images: bool = True):
        self.bag = Path(bag)
        if not (self.bag / "metadata.yaml").is_file():
            raise DataError(f"not a ROS 2 bag directory (no metadata.yaml): {self.bag}")
        self.cameras = tuple(cameras or CAMERAS)
        self.with_images = with_images
        from fastdrivevla_ros.data.typestore import get_typestore

        self.store = get_typestore("jazzy")   # message layouts are identical in humble

    def __len__(self) -> int:
        """Number of keyframes (ground-truth messages) according to the bag's index."""
        reader = self._open()
        try:
            return sum(c.msgcount for c in reader.connections if c.topic == topics.GROUND_TRUTH)
        finally:
            reader.close()

    def __iter__(self) -> Iterator[Frame]:
        wanted = {topics.GROUND_TRUTH, topics.ODOMETRY, topics.EGO_STATUS}
        if self.with_images:
            wanted |= {topics.camera_image(c) for c in self.cameras}
        reader = self._open()
        try:
            conns = [c for c in reader.connections if c.topic in wanted]
            if not any(c.topic == topics.GROUND_TRUTH for c in conns):
                raise DataError(f"{self.bag} has no {topics.GROUND_TRUTH} topic: not a bag "
                                "written by `fastdrivevla convert`")
            try:
                yield from _Assembler(self).run(reader.messages(connections=conns))
            except (DataError, GeneratorExit):
                raise
            except Exception as e:  # rosbags/mcap errors on a damaged chunk
                raise self._broken(e) from e
        finally:
            reader.close()

    def log_times(self) -> list[tuple[str, int]]:
        """(topic, log time ns) of every message in play order (`ros2 bag play`'s order)."""
        reader = self._open()
        try:
            return [(c.topic, t) for c, t, _ in reader.messages()]
        except Exception as e:  # rosbags/mcap errors on a damaged chunk
            raise self._broken(e) from e
        finally:
            reader.close()

    def _open(self):
        """An open rosbags Reader; a truncated or corrupt bag raises DataError saying so."""
        from rosbags.rosbag2 import Reader

        try:
            reader = Reader(self.bag)
            reader.open()
        except Exception as e:  # rosbags raises ReaderError and friends
            raise self._broken(e) from e
        return reader

    def _broken(self, e: Exception) -> DataError:
        files = sorted(str(f) for f in self.bag.iterdir()
                       if f.suffix in (".mcap", ".db3")) or [str(self.bag)]
        return DataError(f"cannot read bag {', '.join(files)}: {e} (truncated or corrupt, e.g. "
                         "an interrupted copy or conversion); copy it again or re-run "
                         "`fastdrivevla convert`")


class _Assembler:
    """Groups a time-ordered message stream into Frames (bounded buffers)."""

    def __init__(self, frames: BagFrames):
        from fastdrivevla_ros.data.ego_history import EgoHistoryBuffer

        self.f = frames
        self.window_ns = int(MAX_CAMERA_OFFSET_S * 1e9)
        self.images: dict[str, deque] = {c: deque() for c in frames.cameras}
        self.pending: deque = deque()          # (stamp, gt msg) waiting for late images
        self.history = EgoHistoryBuffer()
        self.ordinal = 0

    def run(self, messages) -> Iterator[Frame]:
        from fastdrivevla_ros.data.ego_history import odometry_sample, status_sample

        store = self.f.store
        for conn, t_ns, raw in messages:
            topic = conn.topic
            cam = topics.camera_from_topic(topic)
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if cam is not None:
                self.images[cam].append((_stamp_ns(msg.header), bytes(msg.data)))
            elif topic == topics.GROUND_TRUTH:
                self.pending.append((_stamp_ns(msg.header), msg))
            elif topic == topics.ODOMETRY:       # as the drive node's callbacks do
                self.history.add_pose(odometry_sample(msg))
            else:
                self.history.add_status(status_sample(msg))
            while self.pending and t_ns > self.pending[0][0] + self.window_ns:
                yield self._emit(*self.pending.popleft())
        while self.pending:
            yield self._emit(*self.pending.popleft())

    def _nearest(self, buf: deque, stamp: int, what: str, token: str):
        best = min(buf, key=lambda item: abs(item[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.window_ns:
            raise DataError(f"keyframe {token}: no {what} within {MAX_CAMERA_OFFSET_S} s of its "
                            "stamp in the bag")
        return best

    def _emit(self, stamp: int, gt) -> Frame:
        token = gt.sample_token
        jpegs, reference = {}, stamp
        if self.f.with_images:
            for cam, buf in self.images.items():
                cam_stamp, jpegs[cam] = self._nearest(buf, stamp, f"{cam} image", token)
                if cam == self.f.cameras[0]:
                    reference = cam_stamp        # the drive node's plan stamp
                while buf and buf[0][0] < stamp - self.window_ns:
                    buf.popleft()   # older than any later keyframe can use
        frame = Frame(self.ordinal, token, gt.scene_token, gt.scene_name, int(gt.index_in_scene),
                      stamp, jpegs, self.history.history_at(reference * 1e-9),
                      target_from_msg(gt), self._pose_at(reference))
        self.ordinal += 1
        return frame

    def _pose_at(self, stamp_ns: int) -> tuple[float, float, float] | None:
        """The ego pose (x, y, yaw) in the odometry frame where the node takes it (draft)."""
        sample = self.history.pose_at(stamp_ns * 1e-9)
        return None if sample is None else (sample.x, sample.y, sample.yaw)
