"""A rosbags typestore holding the ROS 2 distro's standard messages plus this package's msg/.

Bags written without ROS then carry exactly the types a ROS 2 build generates from msg/, and
readers (rosbags, the mcap ROS 2 decoder, `ros2 bag play`) find the same definitions.
Our types are registered as `fastdrivevla_ros/msg/<Name>`.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError, DataError

PACKAGE = "fastdrivevla_ros"
DISTROS = ("humble", "jazzy")


def msg_dirs() -> list[Path]:
    """Where msg/*.msg may live, most specific first: the source tree (repo root, next to the
    Python package), the share/ directory of an installed ROS 2 package (colcon), and
    <prefix>/share/fastdrivevla_ros/msg (a pip install's data_files)."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / PACKAGE / "msg")
    dirs.append(Path(sys.prefix) / "share" / PACKAGE / "msg")
    return [d for d in dirs if d.is_dir() and any(d.glob("*.msg"))]


def find_msg_dir() -> Path:
    dirs = msg_dirs()
    if not dirs:
        raise DataError(f"cannot find the {PACKAGE} msg/ directory (looked next to the package "
                        "and in $AMENT_PREFIX_PATH/share/fastdrivevla_ros/msg)")
    return dirs[0]


def message_definitions(msg_dir: Path | None = None) -> dict[str, str]:
    """{'fastdrivevla_ros/msg/Name': text} for every msg/*.msg."""
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    files = sorted(msg_dir.glob("*.msg"))
    if not files:
        raise DataError(f"no .msg files in {msg_dir}")
    return {f"{PACKAGE}/msg/{f.stem}": f.read_text(encoding="utf-8") for f in files}


def _store_enum(distro: str):
    from rosbags.typesys import Stores

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ConfigError(f"unknown ROS 2 distro {distro!r}; use one of {list(stores)}")
    return stores[distro]


@lru_cache(maxsize=4)
def get_typestore(distro: str = "jazzy", msg_dir: str | None = None):
    """The distro's standard typestore with our msg/ types registered (cached per distro).

    All files are registered in one call so types may reference each other (AgentBox inside
    PlanningGroundTruth) in any order.
    """
    from rosbags.typesys import get_types_from_msg
    from rosbags.typesys import get_typestore as _rosbags_typestore

    store = _rosbags_typestore(_store_enum(distro))
    types: dict = {}
    for name, text in message_definitions(Path(msg_dir) if msg_dir else None).items():
        try:
            types.update(get_types_from_msg(text, name))
        except Exception as e:  # rosbags raises its own TypesysError subclasses
            raise DataError(f"cannot parse message definition {name}: {e}") from e
    store.register(types)
    return store
