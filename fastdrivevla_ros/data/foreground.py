"""nuScenes-FG-style foreground masks from nuScenes annotations, through nuscenes-devkit.

FastDriveVLA's foreground is "humans, roads, vehicles, traffic signs (incl. lights) and traffic
barriers"; the paper segments it with Grounded-SAM. Here the same classes come from what
nuScenes annotates:
  * objects: every 3D box of a foreground category (humans, vehicles, barriers, traffic cones;
    nuScenes has no traffic sign/light boxes) with enough lidar/radar points, moved into the
    camera frame, clipped at a near plane (so boxes partly behind the camera still fill the part
    in front; boxes wholly behind are skipped), projected, and filled as the convex hull of the
    projected corners, clipped to the image;
  * road: the map raster `maps/<token>.png` (the devkit's semantic prior, drivable surface),
    read through the devkit's MapMask. Each pixel's ray is intersected with the ego ground
    plane (z = 0 in the ego frame) and the hit point, moved to global coordinates with the ego
    pose, is looked up in the map (up to `max_road_distance` metres away).
Boxes over-cover (a box is not a silhouette) and the ground-plane road ignores occlusion by
buildings; both are the price of using annotations instead of a segmenter.

Output layout, shared with external masks (e.g. a Grounded-SAM run writing the same layout):
    OUT/<image path relative to the dataroot, suffix .png>    e.g. OUT/samples/CAM_FRONT/<name>.png
single-channel 8-bit PNG at the image's size, 255 = foreground, 0 = background (readers treat any
nonzero value as foreground).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import ConfigError, DataError
from fastdrivevla_ros.files import atomic_path

FOREGROUND_CATEGORIES = ("human.", "vehicle.", "movable_object.barrier",
                         "movable_object.trafficcone")
NEAR_PLANE = 0.1          # metres in front of the camera
MAP_RESOLUTION = 0.1      # metres per pixel of the nuScenes map rasters
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
             (0, 4), (1, 5), (2, 6), (3, 7))


def mask_path(masks_root: str | Path, rel_image_path: str | Path) -> Path:
    """Where the mask of image `rel_image_path` (relative to its dataroot) lives."""
    return Path(masks_root) / Path(rel_image_path).with_suffix(".png")


@dataclass
class CameraView:
    """One camera image: token, path relative to the dataroot, size, intrinsics K [3, 3],
    camera->ego and ego->global transforms [4, 4], its sample and map."""

    token: str
    filename: str
    width: int
    height: int
    K: np.ndarray
    cam_to_ego: np.ndarray
    ego_to_global: np.ndarray
    sample_token: str
    map_token: str

    @property
    def global_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.ego_to_global @ self.cam_to_ego)


# ---------------------------------------------------------------------------- geometry
def box_polygon(corners_cam: np.ndarray, K: np.ndarray, near: float = NEAR_PLANE):
    """corners_cam: [3, 8] box corners in the camera frame -> [k, 2] image points of the part of
    the box in front of the near plane (corners in front + edge/near-plane crossings), or None
    if the whole box is behind it."""
    from nuscenes.utils.geometry_utils import view_points

    z = corners_cam[2]
    front = z >= near
    if not front.any():
        return None
    points = [corners_cam[:, front]]
    for a, b in BOX_EDGES:
        if front[a] != front[b]:
            t = (near - z[a]) / (z[b] - z[a])
            crossing = corners_cam[:, a] + t * (corners_cam[:, b] - corners_cam[:, a])
            points.append(crossing[:, None])
    return view_points(np.concatenate(points, axis=1), K, normalize=True)[:2].T


def fill_polygon(mask: np.ndarray, points: np.ndarray) -> None:
    """Fill the convex hull of `points` [k, 2], clipped to the image, into `mask` [H, W] (uint8)."""
    import cv2
    from shapely.geometry import MultiPoint, box

    h, w = mask.shape
    hull = MultiPoint(points.tolist()).convex_hull.intersection(box(0, 0, w, h))
    if hull.is_empty or hull.geom_type != "Polygon":
        return
    xy = np.round(np.asarray(hull.exterior.coords)).astype(np.int32)
    cv2.fillPoly(mask, [xy], 255)


def ground_points(view: CameraView, stride: int, max_distance: float):
    """Rays through the centres of a stride x stride pixel grid, hit with the ego ground plane.
    Returns (global xy [2, n] of the hits within max_distance, their flat grid indices,
    grid shape (h, w))."""
    gh, gw = -(-view.height // stride), -(-view.width // stride)
    v, u = np.mgrid[0:gh, 0:gw]
    pix = np.stack([(u.ravel() + 0.5) * stride, (v.ravel() + 0.5) * stride, np.ones(u.size)])
    rays = view.cam_to_ego[:3, :3] @ (np.linalg.inv(view.K) @ pix)    # ego frame directions
    origin = view.cam_to_ego[:3, 3]
    down = rays[2] < -1e-9
    lam = np.where(down, -origin[2] / np.where(down, rays[2], -1.0), -1.0)
    hits = origin[:, None] + lam * rays
    ok = down & (np.hypot(hits[0], hits[1]) <= max_distance)
    world = view.ego_to_global @ np.vstack([hits[:, ok], np.ones(int(ok.sum()))])
    return world[:2], np.flatnonzero(ok), (gh, gw)


# ---------------------------------------------------------------------------- map raster
def _map_mask_class():
    from nuscenes.utils.map_mask import MapMask

    class MapRaster(MapMask):
        """The devkit's MapMask (semantic prior) holding only a window of the raster: the full
        PNG is decoded once (~5 s for the largest map) and cropped to the area around the ego
        poses, so memory stays small. `is_on_mask` etc. are the devkit's own code."""

        def __init__(self, img_file: str, window: tuple[int, int, int, int] | None = None,
                     cache_dir: str | Path | None = None):
            from PIL import Image

            # (the devkit's import raised PIL's pixel limit for its ~1.2 Gpx rasters)
            super().__init__(img_file, resolution=MAP_RESOLUTION)
            with Image.open(img_file) as im:
                self.full_size = im.size
                self.window = window or (0, 0, *im.size)
                shape = (self.window[3] - self.window[1], self.window[2] - self.window[0])
                cached = _cached_crop(img_file, self.window, cache_dir)
                raster = None
                if cached is not None and cached.is_file():
                    raster = np.asarray(Image.open(cached).convert("L"))
                if raster is not None and raster.shape == shape:
                    self._raster = raster
                else:
                    self._raster = np.asarray(im.crop(self.window).convert("L"))
                    if cached is not None:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        tmp = cached.with_suffix(".tmp.png")
                        Image.fromarray(self._raster).save(tmp)
                        tmp.replace(cached)

        @property
        def _base_mask(self) -> np.ndarray:   # overrides MapMask's: the cropped raster
            return self._raster

        @property
        def transform_matrix(self) -> np.ndarray:
            """Global metres -> pixel of the window (the devkit's matrix, shifted)."""
            left, top = self.window[0], self.window[1]
            return np.array([[1.0 / self.resolution, 0, 0, -left],
                             [0, -1.0 / self.resolution, 0, self.full_size[1] - top],
                             [0, 0, 1, 0], [0, 0, 0, 1]])

    return MapRaster


def _cached_crop(img_file: str, window, cache_dir) -> Path | None:
    """Cache file for a window of a map raster (keyed by path, size, mtime and window)."""
    if cache_dir is None:
        return None
    import hashlib

    st = Path(img_file).stat()
    key = f"{Path(img_file).resolve()}|{st.st_size}|{st.st_mtime_ns}|{tuple(window)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(img_file).stem}-{digest}.png"


def map_window(poses_xy: np.ndarray, image_size: tuple[int, int], margin: float):
    """Pixel window (left, top, right, bottom) of a map covering `poses_xy` [n, 2] +- margin m."""
    w, h = image_size
    lo, hi = poses_xy.min(0) - margin, poses_xy.max(0) + margin
    left, right = int(max(0, lo[0] / MAP_RESOLUTION)), int(min(w, hi[0] / MAP_RESOLUTION + 1))
    top = int(max(0, h - hi[1] / MAP_RESOLUTION))
    bottom = int(min(h, h - lo[1] / MAP_RESOLUTION + 1))
    return left, top, max(right, left + 1), max(bottom, top + 1)


# ---------------------------------------------------------------------------- builder
class ForegroundMaskBuilder:
    """Masks for camera images of a loaded `NuScenes`. `mask(view)` -> [H, W] uint8 (0/255)."""

    def __init__(self, nusc, categories: tuple[str, ...] = FOREGROUND_CATEGORIES,
                 road: bool = True, min_points: int = 1, min_visibility: int = 1,
                 road_stride: int = 4, max_road_distance: float = 50.0,
                 map_cache: str | Path | None = None):
        if not 1 <= min_visibility <= 4:
            raise ConfigError(f"min_visibility must be 1-4 (nuScenes visibility levels), got "
                              f"{min_visibility}")
        if road_stride < 1 or max_road_distance <= 0:
            raise ConfigError("road_stride must be >= 1 and max_road_distance > 0")
        self.nusc, self.categories, self.road = nusc, tuple(categories), road
        self.min_points, self.min_visibility = min_points, min_visibility
        self.road_stride, self.max_road_distance = road_stride, max_road_distance
        self.map_cache = map_cache
        self.maps: dict[str, object] = {}
        self._map_of_log = {log: m["token"] for m in nusc.map for log in m["log_tokens"]}
        self._corners: tuple[str, list[np.ndarray]] = ("", [])
        self.timings = {"maps": 0.0, "objects": 0.0, "road": 0.0, "write": 0.0}

    # --------------------------------------------------------------------- records
    def camera_views(self, scenes: list[str] | None = None,
                     cameras: tuple[str, ...] | None = None, every: int = 1) -> list[CameraView]:
        """Keyframe camera images of `scenes` (names; None = all), in scene/sample order; with
        every=k only each k-th keyframe of a scene (quick previews, subsets)."""
        from nuscenes.utils.geometry_utils import transform_matrix
        from pyquaternion import Quaternion

        from fastdrivevla_ros.vla.prompt import CAMERAS

        nusc, cameras = self.nusc, tuple(cameras or CAMERAS)
        known = {s["name"]: s for s in nusc.scene}
        missing = sorted(set(scenes or ()) - set(known))
        if missing:
            raise DataError(f"scenes not in this dataroot/version: {missing}")
        views = []
        for scene in (known[n] for n in (scenes or sorted(known))):
            map_token = self._map_of_log.get(scene["log_token"])
            if map_token is None and self.road:
                raise DataError(f"{scene['name']}: no map record for its log")
            token, index = scene["first_sample_token"], -1
            while token:
                sample, index = nusc.get("sample", token), index + 1
                if index % every:
                    token = sample["next"]
                    continue
                for cam in cameras:
                    sd = nusc.get("sample_data", sample["data"][cam])
                    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                    pose = nusc.get("ego_pose", sd["ego_pose_token"])
                    views.append(CameraView(
                        token=sd["token"], filename=sd["filename"], width=sd["width"],
                        height=sd["height"], K=np.array(cs["camera_intrinsic"], dtype=float),
                        cam_to_ego=transform_matrix(cs["translation"], Quaternion(cs["rotation"])),
                        ego_to_global=transform_matrix(pose["translation"],
                                                       Quaternion(pose["rotation"])),
                        sample_token=token, map_token=map_token))
                token = sample["next"]
        return views

    def load_maps(self, views: list[CameraView]) -> None:
        """Decode each needed map once, cropped to the views' ego poses +- the road range."""
        if not self.road:
            return
        from PIL import Image

        MapRaster = _map_mask_class()
        t0 = time.perf_counter()
        for token in sorted({v.map_token for v in views} - set(self.maps)):
            path = Path(self.nusc.dataroot) / self.nusc.get("map", token)["filename"]
            if not path.is_file():
                raise DataError(f"map raster {path} is missing (needed for the road mask; "
                                "use --no-road to skip it)")
            poses = np.array([v.ego_to_global[:2, 3] for v in views if v.map_token == token])
            with Image.open(path) as im:
                size = im.size
            window = map_window(poses, size, self.max_road_distance + 10.0)
            self.maps[token] = MapRaster(str(path), window, self.map_cache)
        self.timings["maps"] += time.perf_counter() - t0

    # --------------------------------------------------------------------- masks
    def object_corners(self, sample_token: str) -> list[np.ndarray]:
        """Global [3, 8] corners of the sample's foreground boxes (cached per sample)."""
        from nuscenes.utils.data_classes import Box
        from pyquaternion import Quaternion

        if self._corners[0] == sample_token:
            return self._corners[1]
        out = []
        for ann_token in self.nusc.get("sample", sample_token)["anns"]:
            ann = self.nusc.get("sample_annotation", ann_token)
            if (not ann["category_name"].startswith(self.categories)
                    or ann["num_lidar_pts"] + ann["num_radar_pts"] < self.min_points
                    or int(ann["visibility_token"] or 0) < self.min_visibility):
                continue
            out.append(Box(ann["translation"], ann["size"], Quaternion(ann["rotation"])).corners())
        self._corners = (sample_token, out)
        return out

    def object_mask(self, view: CameraView) -> np.ndarray:
        """[H, W] uint8: filled projections of the foreground boxes."""
        mask = np.zeros((view.height, view.width), np.uint8)
        to_cam = view.global_to_cam
        for corners in self.object_corners(view.sample_token):
            cam = to_cam[:3, :3] @ corners + to_cam[:3, 3:4]
            points = box_polygon(cam, view.K)
            if points is not None:
                fill_polygon(mask, points)
        return mask

    def road_mask(self, view: CameraView) -> np.ndarray:
        """[H, W] uint8: pixels whose ground-plane point lies on the map's drivable surface."""
        import cv2

        xy, idx, (gh, gw) = ground_points(view, self.road_stride, self.max_road_distance)
        small = np.zeros(gh * gw, np.uint8)
        small[idx[self.maps[view.map_token].is_on_mask(xy[0], xy[1])]] = 255
        full = cv2.resize(small.reshape(gh, gw), (gw * self.road_stride, gh * self.road_stride),
                          interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(full[:view.height, :view.width])

    def mask(self, view: CameraView) -> np.ndarray:
        """[H, W] uint8, 255 = foreground (objects OR road)."""
        t0 = time.perf_counter()
        mask = self.object_mask(view)
        t1 = time.perf_counter()
        if self.road:
            if view.map_token not in self.maps:
                self.load_maps([view])
            np.maximum(mask, self.road_mask(view), out=mask)
        self.timings["objects"] += t1 - t0
        self.timings["road"] += time.perf_counter() - t1
        return mask

    def write(self, views: list[CameraView], out: str | Path, overwrite: bool = False,
              overlays: str | Path | None = None, progress: bool = True) -> dict:
        """Write a mask PNG per view (skipping existing ones unless overwrite). Returns stats."""
        import cv2
        from tqdm.auto import tqdm

        out = Path(out)
        self.load_maps(views)
        written = skipped = 0
        fg = []
        t0 = time.perf_counter()
        for view in tqdm(views, desc="foreground-masks", unit="img", disable=not progress):
            path = mask_path(out, view.filename)
            if path.exists() and not overwrite:
                skipped += 1
                continue
            mask = self.mask(view)
            t1 = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:     # never a truncated mask taken for a done one
                if not cv2.imwrite(str(tmp), mask):
                    raise DataError(f"cannot write {path}")
            self.timings["write"] += time.perf_counter() - t1
            if overlays:
                write_overlay(Path(self.nusc.dataroot) / view.filename, mask,
                              mask_path(overlays, view.filename))
            fg.append(float((mask > 0).mean()))
            written += 1
        total = time.perf_counter() - t0
        per = {k: 1e3 * v / max(written, 1) for k, v in self.timings.items() if k != "maps"}
        return {"images": len(views), "written": written, "skipped_existing": skipped,
                "mean_foreground_fraction": float(np.mean(fg)) if fg else None,
                "map_load_s": round(self.timings["maps"], 2),
                "ms_per_image": round(1e3 * total / max(written, 1), 2),
                "ms_per_image_by_stage": {k: round(v, 2) for k, v in per.items()}}


def write_overlay(image_path: Path, mask: np.ndarray, out: Path, scale: float = 0.5) -> None:
    """Half-size PNG of the image with the foreground tinted, for a human to check."""
    import cv2

    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read {image_path} for the overlay")
    tint = img.copy()
    tint[mask > 0] = (0.45 * tint[mask > 0] + 0.55 * np.array([40, 40, 255])).astype(np.uint8)
    small = cv2.resize(tint, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), small):
            raise DataError(f"cannot write {out}")


def shard(views: list, spec: str | None) -> list:
    """'i/n': every n-th view starting at i (run n processes for n cores)."""
    if not spec:
        return views
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError as e:
        raise ConfigError(f"--shard must look like 0/4, got {spec!r}") from e
    if not 0 <= i < n:
        raise ConfigError(f"--shard {spec}: need 0 <= i < n")
    return views[i::n]


def split_scenes_present(nusc, split: str | None, scenes) -> list[str] | None:
    """Scene names chosen by `split` / `scenes` (data/splits.py). A split's scenes are cut to
    those this dataroot holds (v1.0-mini holds 10 of them); explicitly named scenes must exist.
    None: every scene."""
    from fastdrivevla_ros.data.splits import select_scenes

    chosen = select_scenes(split, scenes)
    if chosen is None or scenes:
        return chosen
    present = {s["name"] for s in nusc.scene}
    chosen = [name for name in chosen if name in present]
    if not chosen:
        raise DataError(f"none of the {split!r} split's scenes is in this dataroot/version")
    return chosen


def write_masks(dataroot, version: str, out, *, split: str | None = None, scenes=None,
                cameras: tuple[str, ...] | None = None, categories=FOREGROUND_CATEGORIES,
                road: bool = True, min_points: int = 1, min_visibility: int = 1,
                road_stride: int = 4, max_road_distance: float = 50.0, map_cache=None,
                every: int = 1, shard_spec: str | None = None, overwrite: bool = False,
                overlays=None, progress: bool = True) -> dict:
    """Masks of every chosen camera image of a nuScenes dataroot; returns the write stats."""
    from nuscenes.nuscenes import NuScenes

    root = Path(dataroot).expanduser()
    if not (root / version).is_dir():
        raise DataError(f"{root / version} not found (is --dataroot/--version right?)")
    if every < 1:
        raise ConfigError(f"--every must be >= 1, got {every}")
    t0 = time.perf_counter()
    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, OSError, ValueError) as e:
        raise DataError(f"cannot load nuScenes {version} from {root}: {e}") from e
    tables_s = time.perf_counter() - t0
    builder = ForegroundMaskBuilder(nusc, tuple(categories), road=road, min_points=min_points,
                                    min_visibility=min_visibility, road_stride=road_stride,
                                    max_road_distance=max_road_distance, map_cache=map_cache)
    chosen = split_scenes_present(nusc, split, scenes)
    views = shard(builder.camera_views(chosen, tuple(cameras), every), shard_spec)
    stats = builder.write(views, out, overwrite, overlays, progress=progress)
    stats["tables_load_s"] = round(tables_s, 2)
    return stats
