# Copyright 2026 The fastdrivevla_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
The files the ament linter tests check: the ROS-facing code written in ROS 2 style.

The core library follows the project's own style (checked by its own CI); these files are
what a ROS reviewer reads: the nodes, their ROS-free pipeline, launch files and their tests.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = REPO / 'test'
LINTED = [
    REPO / 'fastdrivevla_ros' / 'ros',
    REPO / 'fastdrivevla_ros' / 'pipeline',
    REPO / 'launch',
    *sorted(TEST.glob('test_ros_*.py')),
    *sorted(TEST.glob('test_pipeline_*.py')),
    TEST / 'test_launch_files.py',
    TEST / 'test_copyright.py',
    TEST / 'test_flake8.py',
    TEST / 'test_pep257.py',
    TEST / 'ament_lint_paths.py',
]


def linted_paths() -> list[str]:
    """Return the paths as strings, for the linters' argv."""
    return [str(p) for p in LINTED if p.exists()]
