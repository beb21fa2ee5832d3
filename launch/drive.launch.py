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
Launch the fastdrivevla drive node (and RViz).

  ros2 launch fastdrivevla_ros drive.launch.py model:=/models/impromptu-vla
      pruner:=recon pruner_weights:=/models/reconpruner pruning_ratio:=0.75 rviz:=true
(one command line)

Arguments: model, pruner, pruner_weights, untrained, pruner_options, pruning_ratio,
camera_namespace, device, use_sim_time (each overrides params_file only when given),
params_file (default: the
package's config/drive.yaml), rviz (true|false). `ros2 param set /fastdrivevla_drive
pruning_ratio 0.6` changes the ratio while it runs.
"""

from fastdrivevla_ros.ros.launch_helpers import declare_arguments, drive_node, rviz_nodes
from launch import LaunchDescription
from launch.actions import OpaqueFunction


def _nodes(context) -> list:
    return [drive_node(context), *rviz_nodes(context)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*declare_arguments(), OpaqueFunction(function=_nodes)])
