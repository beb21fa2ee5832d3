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
Launch pieces shared by launch/drive.launch.py and launch/replay.launch.py.

The drive node reads params_file (default: the package's config/drive.yaml); a launch argument
overrides one of its parameters only when it is given (its default '' keeps the file's
value), so a parameter file written by `fastdrivevla search-budgets` is not silently undone.
The nodes are built in OpaqueFunctions because that choice needs the arguments' values.
"""

from fastdrivevla_ros.pipeline.params import launch_value, SPECS
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'fastdrivevla_ros'

# launch arguments that override a drive node parameter (described by the settings schema)
NODE_ARGUMENTS = ('model', 'pruner', 'pruner_weights', 'untrained', 'pruner_options',
                  'pruning_ratio', 'camera_namespace', 'device', 'use_sim_time')
USE_SIM_TIME = 'use /clock (true when playing a bag with --clock)'


def describe(name: str) -> str:
    """Return the launch argument's description: the schema's, or rclpy's use_sim_time."""
    return USE_SIM_TIME if name == 'use_sim_time' else SPECS[name].description


def declare_arguments(**defaults: str) -> list:
    """Return DeclareLaunchArgument actions; `defaults` sets default values by name."""
    share = FindPackageShare(PACKAGE)
    actions = [DeclareLaunchArgument(name, default_value=defaults.get(name, ''),
                                     description=f"{describe(name)} ('' = params_file's value)")
               for name in NODE_ARGUMENTS]
    actions.append(DeclareLaunchArgument(
        'params_file', default_value=PathJoinSubstitution([share, 'config', 'drive.yaml']),
        description='drive node parameter file (given launch arguments override it)'))
    actions.append(DeclareLaunchArgument(
        'rviz', default_value=defaults.get('rviz', 'true'), choices=['true', 'false'],
        description='start RViz with rviz/drive.rviz'))
    return actions


def node_overrides(context) -> dict:
    """Return {parameter: value} for the launch arguments given a non-empty value."""
    overrides = {}
    for name in NODE_ARGUMENTS:
        text = LaunchConfiguration(name).perform(context)
        if text != '':
            overrides[name] = launch_value(name, text)   # ConfigError names the argument
    return overrides


def as_parameters(values: dict) -> dict:
    """
    Return `values` for Node(parameters=[...]) with strings kept strings.

    launch_ros reads a plain string value as YAML, so pruner_options:='{"layer": 3}' would
    become a dict (refused) and model:=123 an int; ParameterValue(value_type=str) keeps them.
    """
    return {name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
            for name, value in values.items()}


def drive_node(context) -> Node:
    """Return the drive node: params_file, then the given launch arguments on top."""
    params_file = LaunchConfiguration('params_file').perform(context)
    return Node(package=PACKAGE, executable='drive_node', name='fastdrivevla_drive',
                output='screen', emulate_tty=True, additional_env={'PYTHONUNBUFFERED': '1'},
                parameters=[params_file, as_parameters(node_overrides(context))])


def rviz_nodes(context) -> list:
    """Return [RViz with the package's layout] when rviz:=true, else []."""
    if LaunchConfiguration('rviz').perform(context) != 'true':
        return []
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), 'rviz', 'drive.rviz'])
    sim_time = node_overrides(context).get('use_sim_time', False)
    return [Node(package='rviz2', executable='rviz2', name='rviz2', arguments=['-d', config],
                 parameters=[{'use_sim_time': sim_time}])]
