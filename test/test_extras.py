"""The core install (no extras) runs the node's code, `plan` and `replay`; each command that
needs an extra says which, in one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _bags import converted_bag

REPO = Path(__file__).resolve().parents[1]
# what the extras bring (and nuscenes-devkit's own dependencies): absent in a core install
OPTIONAL = ("nuscenes", "cv2", "sklearn", "scipy", "pycocotools", "optuna", "accelerate",
            "pytorch_msssim", "ray", "mcap", "mcap_ros2")

# run in a fresh interpreter where importing any OPTIONAL module fails as if not installed
# (sys.modules[name] = None: `import` raises ImportError, importlib.util.find_spec says None)
SCRIPT = """
import json, sys
for name in {optional!r}:
    sys.modules[name] = None
from fastdrivevla_ros.cli import main
import fastdrivevla_ros.ros.drive_node  # noqa: the node's code (rclpy comes from ROS)
import fastdrivevla_ros.pipeline.evaluation, fastdrivevla_ros.eval.merge  # noqa
codes = {{}}
codes["replay"] = main(["replay", {bag!r}, "--model", {model!r}, "--out", {out!r},
                        "--limit", "1", "--max-pixels", "3136", "--max-new-tokens", "4",
                        "--no-constrained", "--no-progress"])
codes["plan"] = main(["plan", "--model", {model!r}, "--image", "CAM_FRONT=" + {image!r},
                      "--max-pixels", "3136", "--max-new-tokens", "4", "--no-constrained"])
codes["convert"] = main(["convert", "--dataroot", {bag!r}, "--out", {out!r} + "-bag"])
codes["sweep"] = main(["sweep", {bag!r}, "--model", {model!r}, "--out", {out!r} + "-sweep",
                       "--pruners", "random", "--ratios", "0.5"])
print(json.dumps(codes))
"""


def _ros_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("rclpy") is not None


def test_core_runs_replay_and_plan_and_commands_name_their_extra(scene_dir, tiny_model_dir,
                                                                 tmp_path):
    bag = converted_bag(scene_dir, max_keyframes=2)
    image = REPO / "fastdrivevla_ros" / "demo_data" / "CAM_FRONT.jpg"
    script = SCRIPT.format(optional=OPTIONAL, bag=str(bag), model=str(tiny_model_dir),
                           out=str(tmp_path / "run"), image=str(image))
    if not _ros_importable():
        script = script.replace("import fastdrivevla_ros.ros.drive_node", "pass")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    codes = json.loads(run.stdout.strip().splitlines()[-1])
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    # plan: 1 = planned, but the random tiny model's text is no trajectory (2 would be an error)
    assert codes == {"replay": 0, "plan": 1, "convert": 2, "sweep": 2}, errors

    assert errors == [
        'fastdrivevla convert: error: fastdrivevla convert needs nuscenes, which is not '
        'installed: pip install "fastdrivevla_ros[nuscenes]"',
        'fastdrivevla sweep: error: fastdrivevla sweep needs ray, which is not installed: '
        'pip install "fastdrivevla_ros[cluster]"'], run.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
