"""Ego-centred drivable-area patches (for the road-boundary "intersection" metric).

Two sources, preferred first:
- `map_expansion`: the nuScenes map expansion's `drivable_area` layer through the devkit's
  `NuScenesMap.get_map_mask` (what OmniDrive evaluates against);
- `semantic_prior`: the devkit's basic map raster `maps/<token>.png` (0.1 m/px, 255 = drivable
  surface AND sidewalks, so it approximates drivable_area), read with the devkit's `MapMask`
  pixel convention: pixel = (round(x / res), round(H - y / res)).

A patch is an [n, n] int8 grid in the ego frame (row j <-> y, column i <-> x, cell (i, j)
covering x in -size/2 + [i, i+1) * res), with 0 = drivable, 100 = not drivable, -1 = unknown
(outside the raster): exactly nav_msgs/OccupancyGrid's data layout and values.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from fastdrivevla_ros.errors import ConfigError, DataError

FREE, OCCUPIED, UNKNOWN = 0, 100, -1
RASTER_RESOLUTION = 0.1   # the nuScenes semantic prior maps are 10 px/m


def cell_centres(size_m: float, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame (x, y) of every cell centre, each [n, n] (row j, column i)."""
    n = grid_cells(size_m, resolution)
    c = -size_m / 2 + (np.arange(n) + 0.5) * resolution
    return np.meshgrid(c, c, indexing="xy")


def grid_cells(size_m: float, resolution: float) -> int:
    if not (0 < resolution <= size_m <= 400):
        raise ConfigError(f"drivable patch: need 0 < resolution <= size <= 400 m, got "
                          f"size={size_m}, resolution={resolution}")
    return int(round(size_m / resolution))


class SemanticPriorRaster:
    """The scene's `maps/<token>.png`, cropped to the region the ego visits (the full raster
    of a city is ~1.2 GB decoded; only the crop is kept)."""

    source = "semantic_prior"

    def __init__(self, png: Path, bounds_xy: tuple[float, float, float, float],
                 resolution: float = RASTER_RESOLUTION):
        """bounds_xy: (xmin, ymin, xmax, ymax) in map metres that patches will touch."""
        png = Path(png)
        if not png.is_file():
            raise DataError(f"map raster not found: {png}")
        self.resolution = resolution
        self.crop, self.c0, self.r0, self.height = _load_crop(png.resolve(), tuple(bounds_xy),
                                                              resolution)

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Map-frame points -> FREE / OCCUPIED / UNKNOWN (int8, same shape)."""
        col = np.round(x / self.resolution).astype(np.int64) - self.c0
        row = np.round(self.height - y / self.resolution).astype(np.int64) - self.r0
        inside = (col >= 0) & (col < self.crop.shape[1]) & (row >= 0) & (row < self.crop.shape[0])
        out = np.full(x.shape, UNKNOWN, dtype=np.int8)
        out[inside] = np.where(self.crop[row[inside], col[inside]] > 0, FREE, OCCUPIED)
        return out

    def patch(self, ego_xy, ego_yaw: float, size_m: float, resolution: float) -> np.ndarray:
        """[n, n] int8 grid centred on the ego, axes along the ego's heading."""
        ex, ey = cell_centres(size_m, resolution)
        c, s = math.cos(ego_yaw), math.sin(ego_yaw)
        return self.lookup(ego_xy[0] + c * ex - s * ey, ego_xy[1] + s * ex + c * ey)


@lru_cache(maxsize=4)
def _load_crop(png: Path, bounds_xy: tuple, resolution: float):
    """(crop [h, w] uint8, first column, first row, full raster height). Cached: decoding a
    city raster takes seconds and several scenes of one log share it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None    # the city rasters are larger than PIL's bomb guard
    with Image.open(png) as img:
        width, height = img.size
        x0, y0, x1, y1 = bounds_xy
        # rows grow downwards: north (large y) is the top of the image
        c0 = max(int(math.floor(x0 / resolution)) - 1, 0)
        c1 = min(int(math.ceil(x1 / resolution)) + 2, width)
        r0 = max(int(math.floor(height - y1 / resolution)) - 1, 0)
        r1 = min(int(math.ceil(height - y0 / resolution)) + 2, height)
        if c1 <= c0 or r1 <= r0:
            raise DataError(f"the ego poses lie outside the map raster {png.name}")
        crop = np.asarray(img.crop((c0, r0, c1, r1)).convert("L"))
    crop.setflags(write=False)
    return crop, c0, r0, height


class MapExpansion:
    """`drivable_area` of the nuScenes map expansion (maps/expansion/<location>.json)."""

    source = "map_expansion"

    def __init__(self, dataroot: Path, location: str):
        from nuscenes.map_expansion.map_api import NuScenesMap

        try:
            self.map = NuScenesMap(dataroot=str(dataroot), map_name=location)
        except Exception as e:  # the devkit raises bare Exception / KeyError on bad files
            raise DataError(f"cannot load the map expansion for {location}: {e}") from e

    @staticmethod
    def available(dataroot: Path, location: str) -> bool:
        return (Path(dataroot) / "maps" / "expansion" / f"{location}.json").is_file()

    def patch(self, ego_xy, ego_yaw: float, size_m: float, resolution: float) -> np.ndarray:
        # get_map_mask rotates the map by -patch_angle about the ego, so canvas columns run
        # along the ego's heading (x) and rows along its left (y): our grid layout
        n = grid_cells(size_m, resolution)
        mask = self.map.get_map_mask((float(ego_xy[0]), float(ego_xy[1]), size_m, size_m),
                                     math.degrees(ego_yaw), ["drivable_area"], (n, n))[0]
        return np.where(mask > 0, FREE, OCCUPIED).astype(np.int8)


def drivable_source(dataroot: Path, location: str, raster_png: Path | None,
                    bounds_xy: tuple[float, float, float, float]):
    """The best available source for a scene: the map expansion, else the raster."""
    if MapExpansion.available(dataroot, location):
        return MapExpansion(dataroot, location)
    if raster_png is None:
        raise DataError(f"no map for {location}: neither maps/expansion/{location}.json nor a "
                        "semantic prior raster")
    return SemanticPriorRaster(raster_png, bounds_xy)
