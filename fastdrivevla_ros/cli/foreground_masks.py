"""`fastdrivevla foreground-masks`: nuScenes-FG-style masks (data/foreground.py)."""

from __future__ import annotations

import argparse
import json

from fastdrivevla_ros.data.foreground import FOREGROUND_CATEGORIES, write_masks
from fastdrivevla_ros.errors import require_extra


def configure_parser(p: argparse.ArgumentParser) -> None:
    from fastdrivevla_ros.data.splits import SPLITS
    from fastdrivevla_ros.vla.prompt import CAMERAS

    p.add_argument("--dataroot", required=True, help="nuScenes dataroot (has samples/, maps/)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-mini")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="official nuScenes split (nuscenes-devkit create_splits_scenes): its "
                   "scenes present in the dataroot (default: every scene)")
    p.add_argument("--scenes", nargs="+", default=None, metavar="NAME",
                   help="scene names (with --split: each must be in it; default: all)")
    p.add_argument("--cameras", nargs="+", default=list(CAMERAS), choices=CAMERAS,
                   metavar="CAM", help="cameras whose images get masks")
    p.add_argument("--out", required=True, help="mask folder: OUT/<image path relative to the "
                   "dataroot, .jpg replaced by .png>")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing masks")
    p.add_argument("--overlays", default=None, metavar="DIR",
                   help="also write half-size tinted previews here (same layout)")
    p.add_argument("--categories", nargs="+", default=list(FOREGROUND_CATEGORIES),
                   help="nuScenes category name prefixes counted as foreground")
    p.add_argument("--no-road", action="store_true", help="objects only (no map raster)")
    p.add_argument("--max-road-distance", type=float, default=50.0,
                   help="road pixels only up to this ground distance (m)")
    p.add_argument("--map-cache", default=None, metavar="DIR",
                   help="keep the cropped map windows here; reruns skip decoding the ~1 Gpx "
                   "map rasters (~5 s each)")
    p.add_argument("--road-stride", type=int, default=4,
                   help="road ray grid stride in pixels (upsampled, nearest)")
    p.add_argument("--min-points", type=int, default=1,
                   help="skip boxes with fewer lidar+radar points (fully occluded objects)")
    p.add_argument("--min-visibility", type=int, default=1, choices=(1, 2, 3, 4),
                   help="nuScenes visibility level (1: 0-40%% ... 4: 80-100%%)")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="only every K-th keyframe of each scene (previews, subsets)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process every N-th image starting at I (parallel runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fastdrivevla_ros.cli.settings import check_out_dir

    require_extra("nuscenes", "nuscenes", "fastdrivevla foreground-masks")
    check_out_dir(args.out)
    stats = write_masks(args.dataroot, args.version, args.out, split=args.split,
                        scenes=args.scenes, cameras=tuple(args.cameras),
                        categories=tuple(args.categories), road=not args.no_road,
                        min_points=args.min_points, min_visibility=args.min_visibility,
                        road_stride=args.road_stride, max_road_distance=args.max_road_distance,
                        map_cache=args.map_cache, every=args.every, shard_spec=args.shard,
                        overwrite=args.overwrite, overlays=args.overlays,
                        progress=not args.no_progress)
    print(json.dumps(stats, indent=2))
    return 0
