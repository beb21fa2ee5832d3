"""nuScenes access through the devkit: validated loading, scene selection, and everything
one keyframe's planning ground truth needs (future ego trajectory, agent boxes, ego motion).

Frames: "ego" is nuScenes' ego_pose frame (rear axle, x forward, y left) at a keyframe's
LIDAR_TOP timestamp (= the sample timestamp). Impromptu-VLA / VAD / UniAD express waypoints in
the LiDAR frame instead; we standardise on the ego frame (as OmniDrive), see docs/bags.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdrivevla_ros.data.ego import CanBusMotion, EgoMotion, PoseTrack, quaternion_yaw, \
    wrap_angle
from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.vla.prompt import CAMERAS, NUM_WAYPOINTS

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
          "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")
REFERENCE_CHANNEL = "LIDAR_TOP"   # nuScenes sample timestamps are LIDAR_TOP timestamps


def open_nuscenes(dataroot: Path | str, version: str):
    """NuScenes(version, dataroot) with the devkit's asserts turned into actionable errors."""
    dataroot = Path(dataroot)
    if not dataroot.is_dir():
        raise DataError(f"nuScenes dataroot not found: {dataroot}")
    table_dir = dataroot / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in dataroot.glob("v1.0-*") if p.is_dir())
        raise DataError(f"no version directory {version!r} in {dataroot} "
                        f"(found: {found or 'none'})")
    missing = [t for t in TABLES if not (table_dir / f"{t}.json").is_file()]
    if missing:
        raise DataError(f"{table_dir} lacks table(s) {', '.join(f'{t}.json' for t in missing)}")
    from nuscenes.nuscenes import NuScenes

    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError) as e:
        raise DataError(f"the nuScenes devkit cannot load {table_dir}: "
                        f"{type(e).__name__}: {e}") from e


def select_scenes(nusc, names: list[str] | None = None, split: str | None = None) -> list[dict]:
    """Scene records by name (in the given order) or by devkit split name (e.g. 'val',
    'mini_val'), else every scene of the version."""
    by_name = {s["name"]: s for s in nusc.scene}
    if split:
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes(verbose=False)
        if split not in splits:
            raise DataError(f"unknown split {split!r}; devkit splits: {sorted(splits)}")
        names = [n for n in splits[split] if n in by_name] if names is None else \
            [n for n in names if n in set(splits[split])]
        if not names:
            raise DataError(f"none of the split {split!r}'s scenes are in this version")
    if names is None:
        return sorted(nusc.scene, key=lambda s: s["name"])
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(f"unknown scene(s) {unknown}; this version has {sorted(by_name)[:20]}"
                        f"{' ...' if len(by_name) > 20 else ''}")
    return [by_name[n] for n in dict.fromkeys(names)]


@dataclass
class EgoPose:
    """An ego pose in the map frame: translation [3], quaternion (w, x, y, z), time in us."""

    translation: np.ndarray
    rotation: tuple[float, float, float, float]
    utime: int

    @property
    def xy(self) -> np.ndarray:
        return self.translation[:2]

    @property
    def yaw(self) -> float:
        return quaternion_yaw(self.rotation)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Map-frame points [N, 3] -> this pose's frame [N, 3] (full 3-D rotation, as the
        devkit's Quaternion(...).inverse.rotate; pitch/roll move BEV points by millimetres)."""
        return (np.asarray(points, float) - self.translation) @ self.matrix

    @property
    def matrix(self) -> np.ndarray:
        from pyquaternion import Quaternion

        return Quaternion(self.rotation).rotation_matrix


@dataclass
class AgentTruth:
    """One agent box at one step, in the ego frame of the CURRENT keyframe."""

    instance_token: str
    category: str
    step: int
    center: np.ndarray        # [3] m
    yaw: float                # rad
    size_lwh: np.ndarray      # [3] length, width, height (m)
    velocity: np.ndarray      # [3] m/s (NaN when unknown)
    num_lidar_pts: int
    num_radar_pts: int


@dataclass
class KeyframeTruth:
    """What one PlanningGroundTruth message carries (drivable patch added by the writer)."""

    sample_token: str
    index_in_scene: int
    utime: int
    ego: EgoPose
    future: np.ndarray        # [6, 2] ego frame, zeros where invalid
    future_yaw: np.ndarray    # [6]
    future_valid: np.ndarray  # [6] bool
    motion: EgoMotion
    agents: list[AgentTruth] = field(default_factory=list)
    future_utimes: list[int] = field(default_factory=list)


class SceneTruth:
    """One scene's keyframes and the ground truth of each."""

    def __init__(self, nusc, scene: dict, dataroot: Path):
        self.nusc, self.scene, self.dataroot = nusc, scene, Path(dataroot)
        self.log = nusc.get("log", scene["log_token"])
        self.location = self.log["location"]
        self.samples = self._keyframes()
        self.poses = [self._pose(s["data"][REFERENCE_CHANNEL]) for s in self.samples]
        self.track = self._pose_track()
        self.can = CanBusMotion.load(self.dataroot, scene["name"])
        self._anns = {}   # (sample token, instance token) -> sample_annotation
        for s in self.samples:
            for token in s["anns"]:
                a = nusc.get("sample_annotation", token)
                self._anns[(s["token"], a["instance_token"])] = a

    @property
    def name(self) -> str:
        return self.scene["name"]

    @property
    def motion_source(self) -> str:
        return "can_bus" if self.can is not None else "ego_pose"

    def _keyframes(self) -> list[dict]:
        samples, token = [], self.scene["first_sample_token"]
        while token:
            s = self.nusc.get("sample", token)
            samples.append(s)
            token = s["next"]
        if len(samples) != self.scene["nbr_samples"]:
            raise DataError(f"{self.name}: sample chain has {len(samples)} keyframes, the scene "
                            f"table says {self.scene['nbr_samples']}")
        return samples

    def _pose(self, sample_data_token: str) -> EgoPose:
        sd = self.nusc.get("sample_data", sample_data_token)
        ep = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return EgoPose(np.asarray(ep["translation"], float), tuple(ep["rotation"]),
                       ep["timestamp"])

    def _pose_track(self) -> PoseTrack:
        """All LIDAR_TOP ego poses (keyframes and sweeps, ~20 Hz) from the first to the last
        keyframe: listed in the tables even where the sweep files are not shipped."""
        first = self.samples[0]["data"][REFERENCE_CHANNEL]
        last_time = self.poses[-1].utime
        poses, token = [], first
        while token:
            sd = self.nusc.get("sample_data", token)
            if sd["timestamp"] > last_time:
                break
            poses.append(self._pose(token))
            token = sd["next"]
        return PoseTrack(np.array([p.utime for p in poses]) * 1e-6,
                         np.array([p.xy for p in poses]), np.array([p.yaw for p in poses]))

    def bounds_xy(self, margin: float) -> tuple[float, float, float, float]:
        xy = np.array([p.xy for p in self.poses])
        return (*(xy.min(0) - margin), *(xy.max(0) + margin))

    def motion(self, utime: int) -> EgoMotion:
        if self.can is not None:
            return self.can.motion(utime)
        return self.track.motion(utime * 1e-6)

    def keyframe(self, k: int) -> KeyframeTruth:
        ego = self.poses[k]
        fut = np.zeros((NUM_WAYPOINTS, 2))
        fut_yaw = np.zeros(NUM_WAYPOINTS)
        valid = np.zeros(NUM_WAYPOINTS, dtype=bool)
        utimes = []
        for j in range(NUM_WAYPOINTS):
            if k + 1 + j < len(self.samples):
                p = self.poses[k + 1 + j]
                fut[j] = ego.to_local(p.translation[None])[0, :2]
                fut_yaw[j] = float(wrap_angle(p.yaw - ego.yaw))
                valid[j] = True
                utimes.append(p.utime)
        return KeyframeTruth(self.samples[k]["token"], k, ego.utime, ego, fut, fut_yaw, valid,
                             self.motion(ego.utime), self._agents(k, ego), utimes)

    def _agents(self, k: int, ego: EgoPose) -> list[AgentTruth]:
        """Agents annotated at keyframe k, with their boxes at k and each of the next 6
        keyframes where the same instance is annotated (VAD/OmniDrive: current agents moved
        along their annotated futures)."""
        out = []
        for ann_token in self.samples[k]["anns"]:
            instance = self.nusc.get("sample_annotation", ann_token)["instance_token"]
            for step in range(NUM_WAYPOINTS + 1):
                if k + step >= len(self.samples):
                    break
                ann = self._anns.get((self.samples[k + step]["token"], instance))
                if ann is None:
                    continue
                centre = ego.to_local(np.asarray(ann["translation"], float)[None])[0]
                vel = np.asarray(self.nusc.box_velocity(ann["token"]), float) @ ego.matrix
                w, length, h = ann["size"]   # nuScenes size is (width, length, height)
                out.append(AgentTruth(
                    instance, ann["category_name"], step, centre,
                    float(wrap_angle(quaternion_yaw(ann["rotation"]) - ego.yaw)),
                    np.array([length, w, h], float), vel,
                    int(ann["num_lidar_pts"]), int(ann["num_radar_pts"])))
        return out

    def camera_records(self, k: int, sweeps: bool = False) -> list[dict]:
        """sample_data records of the six cameras for keyframe k; with `sweeps`, also the
        camera sweeps after it up to (not including) the next keyframe's."""
        out = []
        for cam in CAMERAS:
            if cam not in self.samples[k]["data"]:
                raise DataError(f"{self.name} keyframe {k} has no {cam} sample_data")
            sd = self.nusc.get("sample_data", self.samples[k]["data"][cam])
            out.append(sd)
            while sweeps and sd["next"]:
                sd = self.nusc.get("sample_data", sd["next"])
                if sd["is_key_frame"]:
                    break
                out.append(sd)
        return out

    def calibration(self, channel: str) -> dict:
        """calibrated_sensor of `channel` (constant within a scene/log)."""
        sd = self.nusc.get("sample_data", self.samples[0]["data"][channel])
        return self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])

    def ego_pose_of(self, sample_data: dict) -> EgoPose:
        return self._pose(sample_data["token"])
