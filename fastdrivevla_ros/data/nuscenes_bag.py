"""`fastdrivevla convert`: nuScenes (devkit layout) -> one self-contained ROS 2 bag.

Written with the `rosbags` library (no ROS needed): mcap (default) or sqlite3 storage, bag
format for Jazzy (rosbag2 version 9) or Humble (see `_humble_metadata`). Topics, types and
frames are listed in docs/bags.md and fastdrivevla_ros/data/topics.py. Keyframes only by
default; `--sweeps` adds the camera sweeps between keyframes when their files exist.

The bag is written into a hidden temporary directory next to `--out` and renamed at the end,
so a failure or Ctrl-C never leaves a half-written bag behind.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdrivevla_ros.data import topics
from fastdrivevla_ros.data.drivable import drivable_source, grid_cells
from fastdrivevla_ros.data.ego import yaw_quaternion
from fastdrivevla_ros.data.scene import KeyframeTruth, SceneTruth, open_nuscenes, select_scenes
from fastdrivevla_ros.data.typestore import get_typestore
from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.files import write_json
from fastdrivevla_ros.vla.prompt import CAMERAS, WAYPOINT_DT

STORAGES = ("mcap", "sqlite3")
BAG_VERSION = {"jazzy": 9, "humble": 8}   # rosbags writes 8 or 9; Humble's metadata is rewritten
DEFAULT_PATCH_M, DEFAULT_PATCH_RES = 100.0, 0.1   # OmniDrive's +-50 m at 0.1 m


@dataclass
class ConvertStats:
    scenes: int
    keyframes: int
    full_future: int      # keyframes with all 6 future keyframes (the evaluated ones)
    messages: int
    bytes: int
    seconds: float

    def summary(self) -> str:
        per = self.keyframes or 1
        return (f"{self.scenes} scene(s), {self.keyframes} keyframes ({self.full_future} with a "
                f"full 3 s future), {self.messages} messages, "
                f"{self.bytes / 1e6:.1f} MB ({self.bytes / per / 1e6:.2f} MB/keyframe) in "
                f"{self.seconds:.1f} s ({1e3 * self.seconds / per:.0f} ms/keyframe)")


def _stamp(utime: int) -> int:
    """nuScenes microseconds -> nanoseconds."""
    return int(utime) * 1000


class MessageFactory:
    """Builds typestore message objects (the same fields ROS 2 generates)."""

    def __init__(self, store):
        self.store = store
        self.T = store.types

    def time(self, ns: int):
        return self.T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000,
                                                      nanosec=ns % 1_000_000_000)

    def header(self, ns: int, frame: str):
        return self.T["std_msgs/msg/Header"](stamp=self.time(ns), frame_id=frame)

    def point(self, x=0.0, y=0.0, z=0.0):
        return self.T["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z))

    def vector(self, x=0.0, y=0.0, z=0.0):
        return self.T["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))

    def quaternion(self, wxyz):
        w, x, y, z = (float(v) for v in wxyz)
        return self.T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)

    def pose(self, translation, wxyz):
        return self.T["geometry_msgs/msg/Pose"](position=self.point(*translation),
                                                 orientation=self.quaternion(wxyz))

    def planar_pose(self, x, y, yaw):
        qx, qy, qz, qw = yaw_quaternion(yaw)
        return self.pose((x, y, 0.0), (qw, qx, qy, qz))

    def transform(self, ns: int, parent: str, child: str, translation, wxyz):
        tf = self.T["geometry_msgs/msg/Transform"](translation=self.vector(*translation),
                                                    rotation=self.quaternion(wxyz))
        return self.T["geometry_msgs/msg/TransformStamped"](header=self.header(ns, parent),
                                                             child_frame_id=child, transform=tf)

    def tf(self, transforms: list):
        return self.T["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def compressed_image(self, ns: int, frame: str, jpeg: bytes):
        return self.T["sensor_msgs/msg/CompressedImage"](
            header=self.header(ns, frame), format="jpeg",
            data=np.frombuffer(jpeg, dtype=np.uint8))

    def camera_info(self, ns: int, frame: str, width: int, height: int, intrinsic):
        K = np.asarray(intrinsic, float).reshape(3, 3)
        P = np.hstack([K, np.zeros((3, 1))])
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False)
        # nuScenes images are already undistorted: zero plumb_bob coefficients
        return self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(ns, frame), height=int(height), width=int(width),
            distortion_model="plumb_bob", d=np.zeros(5), k=K.ravel(), r=np.eye(3).ravel(),
            p=P.ravel(), binning_x=0, binning_y=0, roi=roi)

    def odometry(self, ns: int, truth: KeyframeTruth):
        m = truth.motion
        cov = np.zeros(36)
        pose = self.T["geometry_msgs/msg/PoseWithCovariance"](
            pose=self.pose(truth.ego.translation, truth.ego.rotation), covariance=cov)
        twist = self.T["geometry_msgs/msg/Twist"](linear=self.vector(*m.velocity),
                                                   angular=self.vector(0.0, 0.0, m.yaw_rate))
        return self.T["nav_msgs/msg/Odometry"](
            header=self.header(ns, topics.MAP_FRAME), child_frame_id=topics.EGO_FRAME, pose=pose,
            twist=self.T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=cov))

    def ego_status(self, ns: int, truth: KeyframeTruth):
        m = truth.motion
        return self.T["fastdrivevla_ros/msg/EgoStatus"](
            header=self.header(ns, topics.EGO_FRAME), speed=m.speed,
            linear_velocity=self.vector(*m.velocity), acceleration=self.vector(*m.acceleration),
            yaw_rate=m.yaw_rate, steering=m.steering, steering_kind=m.steering_kind,
            source=m.source)

    def occupancy_grid(self, ns: int, grid: np.ndarray, resolution: float):
        n = grid.shape[0]
        half = n * resolution / 2
        info = self.T["nav_msgs/msg/MapMetaData"](
            map_load_time=self.time(ns), resolution=float(resolution), width=n, height=n,
            origin=self.pose((-half, -half, 0.0), (1.0, 0.0, 0.0, 0.0)))
        return self.T["nav_msgs/msg/OccupancyGrid"](header=self.header(ns, topics.EGO_FRAME),
                                                     info=info, data=grid.astype(np.int8).ravel())

    def agent(self, a):
        return self.T["fastdrivevla_ros/msg/AgentBox"](
            instance_token=a.instance_token, category=a.category, step=int(a.step),
            center=self.point(*a.center), yaw=float(a.yaw), size=self.vector(*a.size_lwh),
            velocity=self.vector(*a.velocity), num_lidar_pts=a.num_lidar_pts,
            num_radar_pts=a.num_radar_pts)

    def ground_truth(self, ns: int, scene: SceneTruth, truth: KeyframeTruth, grid, resolution,
                     source: str):
        return self.T["fastdrivevla_ros/msg/PlanningGroundTruth"](
            header=self.header(ns, topics.EGO_FRAME), sample_token=truth.sample_token,
            scene_token=scene.scene["token"], scene_name=scene.name, location=scene.location,
            index_in_scene=truth.index_in_scene, step_dt=WAYPOINT_DT,
            future=[self.point(x, y) for x, y in truth.future],
            future_yaw=truth.future_yaw.astype(float),
            future_valid=truth.future_valid.astype(bool),
            agents=[self.agent(a) for a in truth.agents],
            ego_pose=self.pose(truth.ego.translation, truth.ego.rotation),
            drivable_area=self.occupancy_grid(ns, grid, resolution), drivable_source=source)

    def path(self, ns: int, frame: str, points, yaws, stamps_ns):
        poses = [self.T["geometry_msgs/msg/PoseStamped"](header=self.header(t, frame),
                                                         pose=self.planar_pose(x, y, yaw))
                 for (x, y), yaw, t in zip(points, yaws, stamps_ns)]
        return self.T["nav_msgs/msg/Path"](header=self.header(ns, frame), poses=poses)


def _qos(transient_local: bool = False):
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(0, 0)   # 0 = "unspecified": the ROS default (infinite)
    return [Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


TOPIC_TYPES = {
    topics.TF_STATIC: "tf2_msgs/msg/TFMessage",
    topics.TF: "tf2_msgs/msg/TFMessage",
    topics.ODOMETRY: "nav_msgs/msg/Odometry",
    topics.EGO_STATUS: "fastdrivevla_ros/msg/EgoStatus",
    topics.GROUND_TRUTH: "fastdrivevla_ros/msg/PlanningGroundTruth",
    topics.GROUND_TRUTH_PATH: "nav_msgs/msg/Path",
    **{topics.camera_image(c): "sensor_msgs/msg/CompressedImage" for c in CAMERAS},
    **{topics.camera_info(c): "sensor_msgs/msg/CameraInfo" for c in CAMERAS},
}


class BagWriter:
    """rosbags Writer + typestore; serialises and counts messages."""

    def __init__(self, path: Path, storage: str, distro: str, compress: bool = True):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

        if storage not in STORAGES:
            raise ConfigError(f"--storage must be one of {STORAGES}, got {storage!r}")
        if distro not in BAG_VERSION:
            raise ConfigError(f"--distro must be one of {sorted(BAG_VERSION)}, got {distro!r}")
        self.store = get_typestore(distro)
        self.factory = MessageFactory(self.store)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=BAG_VERSION[distro], storage_plugin=plugin)
        if compress and storage == "mcap":   # zstd chunks: the occupancy grids shrink ~50x
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.connections: dict[str, object] = {}
        self.count = 0

    def open(self, topic_types: dict[str, str]) -> None:
        self.writer.open()
        for topic, msgtype in topic_types.items():
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.store,
                offered_qos_profiles=_qos(transient_local=topic == topics.TF_STATIC))

    def write(self, topic: str, ns: int, msg) -> None:
        data = self.store.serialize_cdr(msg, msg.__msgtype__)
        self.writer.write(self.connections[topic], ns, data)
        self.count += 1

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Release the files after an error (the caller deletes them)."""
        self.writer.abort()


def _read_file(dataroot: Path, record: dict) -> bytes:
    path = dataroot / record["filename"]
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _keyframes(scene: SceneTruth, first: int, count: int | None) -> range:
    """The keyframe indices of `scene` a bag holds: `count` (None: all) from `first` on."""
    n = len(scene.samples)
    return range(min(first, n), min(n, first + (count or n)))


def _check_files(dataroot: Path, scenes: list[SceneTruth], sweeps: bool,
                 keyframes: tuple[int, int | None]) -> int:
    """Every image file the bag will need exists (fail before writing anything)."""
    n = 0
    for scene in scenes:
        for k in _keyframes(scene, *keyframes):
            for sd in scene.camera_records(k, sweeps):
                if not (dataroot / sd["filename"]).is_file():
                    hint = " (drop --sweeps to convert keyframes only)" if sweeps and \
                        not sd["is_key_frame"] else ""
                    raise DataError(f"missing image file {dataroot / sd['filename']}{hint}")
                n += 1
    return n


class SceneConverter:
    """Writes one scene's messages in time order."""

    def __init__(self, out: BagWriter, dataroot: Path, patch_m: float, patch_res: float,
                 sweeps: bool):
        self.out, self.f = out, out.factory
        self.dataroot, self.patch_m, self.patch_res, self.sweeps = \
            dataroot, patch_m, patch_res, sweeps
        self.full_future = 0

    def static_tf(self, scene: SceneTruth, ns: int) -> None:
        tfs = []
        for channel in (*CAMERAS, "LIDAR_TOP"):
            cal = scene.calibration(channel)
            tfs.append(self.f.transform(ns, topics.EGO_FRAME, channel, cal["translation"],
                                        cal["rotation"]))
        self.out.write(topics.TF_STATIC, ns, self.f.tf(tfs))

    def keyframe_messages(self, scene: SceneTruth, k: int, drivable) -> list[tuple]:
        """[(stamp ns, order, topic, message factory)] for keyframe k and its sweeps."""
        f = self.f
        items = []
        for sd in scene.camera_records(k, self.sweeps):
            ns, cam, ego = _stamp(sd["timestamp"]), sd["channel"], scene.ego_pose_of(sd)
            cal = scene.calibration(cam)
            items.append((ns, 0, topics.TF, lambda ns=ns, ego=ego: f.tf([f.transform(
                ns, topics.MAP_FRAME, topics.EGO_FRAME, ego.translation, ego.rotation)])))
            items.append((ns, 1, topics.camera_info(cam), lambda ns=ns, cam=cam, sd=sd, cal=cal:
                          f.camera_info(ns, cam, sd["width"], sd["height"],
                                        cal["camera_intrinsic"])))
            items.append((ns, 2, topics.camera_image(cam), lambda ns=ns, cam=cam, sd=sd:
                          f.compressed_image(ns, cam, _read_file(self.dataroot, sd))))
        truth = scene.keyframe(k)
        self.full_future += bool(truth.future_valid.all())
        ns = _stamp(truth.utime)
        ego = truth.ego
        grid = drivable.patch(ego.xy, ego.yaw, self.patch_m, self.patch_res)
        fut_ns = [_stamp(u) for u in truth.future_utimes]
        n_valid = int(truth.future_valid.sum())
        items += [
            (ns, 0, topics.TF, lambda: f.tf([f.transform(ns, topics.MAP_FRAME, topics.EGO_FRAME,
                                                        ego.translation, ego.rotation)])),
            (ns, 1, topics.ODOMETRY, lambda: f.odometry(ns, truth)),
            (ns, 2, topics.EGO_STATUS, lambda: f.ego_status(ns, truth)),
            (ns, 3, topics.GROUND_TRUTH, lambda: f.ground_truth(ns, scene, truth, grid,
                                                                self.patch_res, drivable.source)),
            (ns, 4, topics.GROUND_TRUTH_PATH, lambda: f.path(
                ns, topics.EGO_FRAME, truth.future[:n_valid], truth.future_yaw[:n_valid],
                fut_ns)),
        ]
        return items

    def write_scene(self, scene: SceneTruth, progress,
                    keyframes: tuple[int, int | None] = (0, None)) -> None:
        drivable = drivable_source(self.dataroot, scene.location, _raster_path(scene),
                                   scene.bounds_xy(margin=self.patch_m * math.sqrt(0.5) + 5))
        first = min(_stamp(sd["timestamp"]) for sd in scene.camera_records(0))
        self.static_tf(scene, min(first, _stamp(scene.poses[0].utime)))
        for k in _keyframes(scene, *keyframes):
            for ns, _, topic, make in sorted(self.keyframe_messages(scene, k, drivable),
                                             key=lambda item: item[:2]):
                self.out.write(topic, ns, make())
            progress.update(1)


def _raster_path(scene: SceneTruth) -> Path | None:
    """The semantic prior raster of the scene's log (maps/<token>.png), if listed."""
    for m in scene.nusc.map:
        if scene.log["token"] in m["log_tokens"]:
            return scene.dataroot / m["filename"]
    return None


def _humble_metadata(bag: Path) -> None:
    """Rewrite metadata.yaml in the layout ROS 2 Humble writes (version 5): rosbags writes
    version 8 (QoS as a YAML string, as Humble expects) but adds keys Humble's yaml-cpp parser
    does not know (type_description_hash, custom_data, ros_distro)."""
    import yaml

    path = bag / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    for key in ("custom_data", "ros_distro"):
        info.pop(key, None)
    for entry in info["topics_with_message_count"]:
        entry["topic_metadata"].pop("type_description_hash", None)
    path.write_text(yaml.safe_dump(meta, sort_keys=False))


def _remove_stale_stages(out: Path) -> None:
    """Delete the stages of conversions into `out` whose process is gone (kill -9, a crash):
    they can never be finished. A live one (another convert now) is left alone."""
    for stage in out.parent.glob(f".{out.name}.partial-*"):
        pid = stage.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's process
        return True
    return True


@contextmanager
def staged_bag(out: Path):
    """Yields where to write a bag; on success it is renamed to `out` (replacing it), on any
    failure it is deleted. It lives at <hidden sibling dir>/<out.name> so the storage file
    already has its final name (<name>.mcap / .db3)."""
    _remove_stale_stages(out)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage / out.name
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage / out.name, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def convert(dataroot: Path | str, version: str, out: Path | str, scenes: list[str] | None = None,
            split: str | None = None, storage: str = "mcap", distro: str = "jazzy",
            sweeps: bool = False, patch_m: float = DEFAULT_PATCH_M,
            patch_res: float = DEFAULT_PATCH_RES, overwrite: bool = False,
            compress: bool = True, max_keyframes: int | None = None,
            progress: bool = True, first_keyframe: int = 0) -> ConvertStats:
    """Convert the selected scenes into one bag directory at `out` (see module docstring).

    max_keyframes: write only N keyframes of each scene, from `first_keyframe` on (quick
    smoke-test bags, or a scene split into bags; ground-truth futures and ego histories still
    use the keyframes around them)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    dataroot, out = Path(dataroot), Path(out)
    grid_cells(patch_m, patch_res)   # validate before touching anything
    if max_keyframes is not None and max_keyframes < 1:
        raise ConfigError(f"--max-keyframes must be >= 1, got {max_keyframes}")
    if first_keyframe < 0:
        raise ConfigError(f"the first keyframe must be >= 0, got {first_keyframe}")
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise DataError(f"output parent directory does not exist: {out.parent}")
    nusc = open_nuscenes(dataroot, version)
    records = select_scenes(nusc, scenes, split)
    truths = sorted((SceneTruth(nusc, s, dataroot) for s in records),
                    key=lambda t: t.poses[0].utime)     # the bag runs forward in time
    keyframes = (first_keyframe, max_keyframes)
    _check_files(dataroot, truths, sweeps, keyframes)
    total = sum(len(_keyframes(t, *keyframes)) for t in truths)
    with staged_bag(out) as tmp:
        writer = BagWriter(tmp, storage, distro, compress)
        try:
            writer.open(TOPIC_TYPES)
            converter = SceneConverter(writer, dataroot, patch_m, patch_res, sweeps)
            with tqdm(total=total, desc="convert", unit="keyframe", disable=not progress) as bar:
                for scene in truths:
                    converter.write_scene(scene, bar, keyframes)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        if distro == "humble":
            _humble_metadata(tmp)
        # part of the bag's identity (eval/run_folder.bag_id): what made its ground truth
        write_json(tmp / "conversion.json", {
            "version": version, "scenes": [t.scene["name"] for t in truths],
            "sweeps": sweeps, "patch_size_m": patch_m, "patch_resolution_m": patch_res,
            "max_keyframes": max_keyframes, "storage": storage, "distro": distro})
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ConvertStats(len(truths), total, converter.full_future, writer.count, size,
                        time.perf_counter() - t0)
