"""`fastdrivevla convert`: nuScenes scenes -> a ROS 2 bag (data/nuscenes_bag.py)."""

from __future__ import annotations

import argparse

from fastdrivevla_ros.data.nuscenes_bag import BAG_VERSION, convert, DEFAULT_PATCH_M, \
    DEFAULT_PATCH_RES, STORAGES
from fastdrivevla_ros.errors import require_extra


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataroot", required=True,
                   help="nuScenes root (holds VERSION/, samples/, maps/)")
    p.add_argument("--version", default="v1.0-trainval", help="table directory, e.g. v1.0-mini")
    p.add_argument("--scenes", nargs="+", help="scene names (default: all of the version/split)")
    p.add_argument("--split", help="devkit split name, e.g. val or mini_val")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--storage", choices=STORAGES, default="mcap",
                   help="rosbag2 storage plugin (mcap: Jazzy default; sqlite3: Humble default)")
    p.add_argument("--distro", choices=sorted(BAG_VERSION), default="jazzy",
                   help="ROS 2 distro that will play the bag (bag format version)")
    p.add_argument("--sweeps", action="store_true",
                   help="also write the camera sweeps between keyframes (files must exist)")
    p.add_argument("--patch-size", type=float, default=DEFAULT_PATCH_M,
                   help="side of the ego-centred drivable-area patch, metres")
    p.add_argument("--patch-resolution", type=float, default=DEFAULT_PATCH_RES,
                   help="drivable-area cell size, metres")
    p.add_argument("--max-keyframes", type=int,
                   help="only the first N keyframes of each scene (smoke tests)")
    p.add_argument("--no-compression", action="store_true", help="mcap without zstd chunks")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    require_extra("nuscenes", "nuscenes", "fastdrivevla convert")
    stats = convert(args.dataroot, args.version, args.out, scenes=args.scenes, split=args.split,
                    storage=args.storage, distro=args.distro, sweeps=args.sweeps,
                    patch_m=args.patch_size, patch_res=args.patch_resolution,
                    overwrite=args.overwrite, compress=not args.no_compression,
                    max_keyframes=args.max_keyframes)
    print(f"wrote {args.out}: {stats.summary()}")
    return 0
