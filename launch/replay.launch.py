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
Replay a converted bag through the drive node and score it like the offline replay.

  ros2 launch fastdrivevla_ros replay.launch.py bag:=out/scene-0916_bag
      model:=/models/impromptu-vla pruner:=recon pruning_ratio:=0.5 output_dir:=out/ros_eval
(one command line)

Order of events: the drive node loads the model; when it logs 'model ready' the bag starts
(`ros2 bag play --clock`, at `rate`); the evaluator pairs every plan with the bag's
/planning/ground_truth and appends each settled keyframe to predictions.jsonl at once. When no
message has arrived for `finish_grace_s` wall-clock seconds (the bag ended and the last plans
are in) the evaluator writes metrics.json and report.md (the same files as `fastdrivevla
replay`) and exits, which ends the launch. Play slowly enough that every keyframe is planned
(rate x model latency < 0.5 s of bag time per keyframe); keyframes without a plan are reported
as missing. A model that fails to load ends the launch.
"""

from fastdrivevla_ros.ros.launch_helpers import (
    as_parameters, declare_arguments, drive_node, node_overrides, PACKAGE, rviz_nodes)
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument, EmitEvent, ExecuteProcess, LogInfo, OpaqueFunction,
    RegisterEventHandler, TimerAction)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

READY, FAILED = b'model ready', b'model load failed'
BACKSTOP_S = 120.0      # extra seconds for metrics + report before the launch gives up


def start_bag_when_model_ready(drive, bag_play) -> RegisterEventHandler:
    """Start `bag_play` once the drive node logs READY; shut down if loading FAILED."""
    state = {'started': False}

    def on_output(event):
        if state['started']:
            return None
        if READY in event.text:
            state['started'] = True
            return [LogInfo(msg='model ready: playing the bag'), bag_play]
        if FAILED in event.text:
            state['started'] = True
            return [EmitEvent(event=Shutdown(reason='the drive node could not load the model'))]
        return None

    return RegisterEventHandler(OnProcessIO(target_action=drive, on_stdout=on_output,
                                            on_stderr=on_output))


def _nodes(context) -> list:
    arg = LaunchConfiguration
    drive = drive_node(context)
    bag_play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', arg('bag'), '--rate', arg('rate'), '--clock', '100'],
        name='bag_play', output='screen')
    evaluator = Node(
        package=PACKAGE, executable='replay_evaluator', name='fastdrivevla_replay_evaluator',
        output='screen', additional_env={'PYTHONUNBUFFERED': '1'},
        parameters=[as_parameters({
            'output_dir': arg('output_dir').perform(context),
            'match_tolerance_s': float(arg('match_tolerance_s').perform(context)),
            'bag': arg('bag').perform(context),
            'idle_timeout_s': float(arg('finish_grace_s').perform(context)),
            'model': node_overrides(context).get('model', ''),
            'use_sim_time': True})])
    # the evaluator ends the launch once it has written its files (idle_timeout_s after the
    # last message); the timer after the bag's end only backs that up if it never does
    grace = float(arg('finish_grace_s').perform(context))
    bag_done = RegisterEventHandler(OnProcessExit(
        target_action=bag_play,
        on_exit=[LogInfo(msg='bag finished; waiting for the last plans'),
                 TimerAction(period=2.0 * grace + BACKSTOP_S, actions=[EmitEvent(
                     event=Shutdown(reason='the evaluator did not finish in time'))])]))
    evaluated = RegisterEventHandler(OnProcessExit(
        target_action=evaluator,
        on_exit=[EmitEvent(event=Shutdown(reason='the evaluator exited'))]))
    return [evaluator, drive, start_bag_when_model_ready(drive, bag_play), bag_done, evaluated,
            *rviz_nodes(context)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *declare_arguments(use_sim_time='true', rviz='false'),
        DeclareLaunchArgument('bag', description='bag directory written by fastdrivevla '
                              'convert (required)'),
        DeclareLaunchArgument('rate', default_value='0.2',
                              description='bag play rate (slow enough for the model)'),
        DeclareLaunchArgument('output_dir', default_value='out/ros_replay',
                              description='evaluation run directory'),
        DeclareLaunchArgument('match_tolerance_s', default_value='0.1',
                              description='max plan-to-keyframe stamp difference (s)'),
        DeclareLaunchArgument('finish_grace_s', default_value='30.0',
                              description='wall-clock seconds without a message after which '
                              'the evaluator writes its files and the launch ends'),
        OpaqueFunction(function=_nodes),
    ])
