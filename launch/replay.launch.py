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

Order of events: the drive node loads the model; when it logs 'model ready' the bag starts;
the evaluator pairs every plan with the bag's /planning/ground_truth and appends each settled
keyframe to predictions.jsonl at once, and writes metrics.json and report.md (the same files
as `fastdrivevla replay`) at the end, which ends the launch. A model that fails to load ends
the launch. Two modes:

- mode:=lockstep (default): `ros2 bag play --start-paused`; the lockstep node bursts one
  keyframe's messages at a time through the player's burst service and plays the next once the
  plan for the current one arrived (or keyframe_timeout_s passed: counted and reported). Every
  keyframe is planned whatever the machine's speed, with the predictions of `fastdrivevla
  replay`. The evaluator finishes finish_grace_s (default 3) after the lockstep node's end.
- mode:=realtime: `ros2 bag play --clock --rate R`, for latency studies: the node plans the
  newest camera set, so keyframes arriving while it is busy are reported as missing. The
  evaluator finishes finish_grace_s (default 30) wall-clock seconds after the last message.
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
FINISH_GRACE_S = {'lockstep': 3.0, 'realtime': 30.0}     # finish_grace_s:='' (the default)


def start_bag_when_model_ready(drive, bag_play) -> RegisterEventHandler:
    """Start the `bag_play` actions once the drive node logs READY; shut down if it FAILED."""
    state = {'started': False}

    def on_output(event):
        if state['started']:
            return None
        if READY in event.text:
            state['started'] = True
            return [LogInfo(msg='model ready: playing the bag'), *bag_play]
        if FAILED in event.text:
            state['started'] = True
            return [EmitEvent(event=Shutdown(reason='the drive node could not load the model'))]
        return None

    return RegisterEventHandler(OnProcessIO(target_action=drive, on_stdout=on_output,
                                            on_stderr=on_output))


def _bag_play(context, mode: str) -> list:
    """Return [the `ros2 bag play` process, the lockstep node (lockstep mode only)]."""
    arg = LaunchConfiguration
    if mode == 'realtime':
        return [ExecuteProcess(cmd=['ros2', 'bag', 'play', arg('bag'), '--rate', arg('rate'),
                                    '--clock', '100'], name='bag_play', output='screen')]
    play = ExecuteProcess(cmd=['ros2', 'bag', 'play', arg('bag'), '--clock', '100',
                               '--start-paused'], name='bag_play', output='screen')
    lockstep = Node(
        package=PACKAGE, executable='replay_lockstep', name='fastdrivevla_replay_lockstep',
        output='screen', additional_env={'PYTHONUNBUFFERED': '1'},
        parameters=[{'bag': arg('bag').perform(context),
                     'match_tolerance_s': float(arg('match_tolerance_s').perform(context)),
                     'keyframe_timeout_s': float(arg('keyframe_timeout_s').perform(context))}])
    return [play, lockstep]


def _nodes(context) -> list:
    arg = LaunchConfiguration
    mode = arg('mode').perform(context)
    grace = arg('finish_grace_s').perform(context)
    grace = float(grace) if grace else FINISH_GRACE_S[mode]
    drive = drive_node(context)
    bag_play, *lockstep = _bag_play(context, mode)
    evaluator = Node(
        package=PACKAGE, executable='replay_evaluator', name='fastdrivevla_replay_evaluator',
        output='screen', additional_env={'PYTHONUNBUFFERED': '1'},
        parameters=[as_parameters({
            'output_dir': arg('output_dir').perform(context),
            'match_tolerance_s': float(arg('match_tolerance_s').perform(context)),
            'bag': arg('bag').perform(context),
            'idle_timeout_s': grace, 'wait_for_finished': mode == 'lockstep',
            'model': node_overrides(context).get('model', ''),
            'use_sim_time': True})])
    # the evaluator ends the launch once it has written its files (idle_timeout_s after the
    # last message); the timer after the bag's end only backs that up if it never does
    # (in lockstep mode the paused player never ends by itself: the lockstep node's end counts)
    bag_done = RegisterEventHandler(OnProcessExit(
        target_action=(lockstep or [bag_play])[0],
        on_exit=[LogInfo(msg='bag finished; waiting for the last plans'),
                 TimerAction(period=2.0 * grace + BACKSTOP_S, actions=[EmitEvent(
                     event=Shutdown(reason='the evaluator did not finish in time'))])]))
    evaluated = RegisterEventHandler(OnProcessExit(
        target_action=evaluator,
        on_exit=[EmitEvent(event=Shutdown(reason='the evaluator exited'))]))
    return [evaluator, drive, start_bag_when_model_ready(drive, [bag_play, *lockstep]),
            bag_done, evaluated, *rviz_nodes(context)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *declare_arguments(use_sim_time='true', rviz='false'),
        DeclareLaunchArgument('bag', description='bag directory written by fastdrivevla '
                              'convert (required)'),
        DeclareLaunchArgument('mode', default_value='lockstep', choices=['lockstep', 'realtime'],
                              description='lockstep: one keyframe at a time, each planned '
                              '(evaluation); realtime: the bag on the clock at `rate` '
                              '(latency studies; keyframes may be missed)'),
        DeclareLaunchArgument('rate', default_value='0.2',
                              description='realtime mode: bag play rate'),
        DeclareLaunchArgument('keyframe_timeout_s', default_value='120.0',
                              description='lockstep mode: wall-clock seconds to wait for a '
                              'keyframe plan before playing the next (counted as missing)'),
        DeclareLaunchArgument('output_dir', default_value='out/ros_replay',
                              description='evaluation run directory'),
        DeclareLaunchArgument('match_tolerance_s', default_value='0.1',
                              description='max plan-to-keyframe stamp difference (s)'),
        DeclareLaunchArgument('finish_grace_s', default_value='',
                              description='wall-clock seconds without a message after which '
                              'the evaluator writes its files and the launch ends (after the '
                              "lockstep node's end in lockstep mode; '' = 3 lockstep, "
                              '30 realtime)'),
        OpaqueFunction(function=_nodes),
    ])
