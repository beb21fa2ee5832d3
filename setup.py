"""pip install of the ROS-free core and the `fastdrivevla` command.

In a ROS 2 workspace the package is built by colcon through CMakeLists.txt (ament_cmake +
rosidl for msg/); this file serves pip users and CI.
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

# The tested transformers window is defined once, in the package (fastdrivevla_ros/compat.py).
TRANSFORMERS = re.search(r'^TRANSFORMERS_REQUIREMENT = "([^"]+)"',
                         (Path(__file__).parent / "fastdrivevla_ros" / "compat.py").read_text(),
                         re.M).group(1)

setup(
    name="fastdrivevla_ros",
    version="0.1.0",
    description="Qwen2.5-VL driving planner with plug-and-play visual-token pruning "
                "(FastDriveVLA ReconPruner and peers) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fastdrivevla_ros", "fastdrivevla_ros.*"]),
    package_data={"fastdrivevla_ros": ["demo_data/*"]},
    # message definitions, found by the rosbags typestore in non-editable installs too
    data_files=[("share/fastdrivevla_ros/msg", glob("msg/*.msg")),
                ("share/fastdrivevla_ros/config", glob("config/*.yaml"))],
    install_requires=[
        "torch>=2.4",
        TRANSFORMERS,
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "packaging>=20",
        "numpy>=1.24,<2",
        "pillow>=10",
        "pyyaml>=6",
        "tqdm>=4.66",
        "filelock>=3.12",
        "matplotlib>=3.8",
        "xgrammar>=0.1.20",
        "accelerate>=1.0",
        "pytorch-msssim>=1.0",
        "optuna>=4.0",
        "rosbags>=0.10",
        "mcap>=1.2",
        "mcap-ros2-support>=0.5",
        "nuscenes-devkit>=1.1.11",
        "shapely>=2.0",
    ],
    extras_require={"test": ["pytest>=8"]},
    entry_points={"console_scripts": ["fastdrivevla = fastdrivevla_ros.cli:main"]},
)
