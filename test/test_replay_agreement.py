"""The drive node prompts the ego history `fastdrivevla replay` prompts, whatever the timing.

The node's ApproximateTimeSynchronizer completes a camera set when its last image arrives; in a
converted nuScenes bag CAM_BACK_LEFT often comes AFTER the keyframe's odometry and sometimes
before, and in ROS the odometry callback may run after the set's anyway. The node therefore
waits (ego_wait_s) until its ego streams reach the set's reference stamp and asks the shared
EgoHistoryBuffer at that stamp, as the bag reader does. Here the worst case is played on the
real scene: every keyframe's odometry and status are delivered by another thread only after
its camera set completed.
"""

from __future__ import annotations

import threading

from _bags import converted_bag
from _scene import require_scene
import pytest

KEYFRAMES = 6


@pytest.fixture(scope="module")
def bag():
    return converted_bag(require_scene(), max_keyframes=KEYFRAMES)


def node_histories(bag, cameras, wait_s: float) -> list:
    """
    Histories the drive node would prompt: a planner thread per camera set, asking as soon
    as the set completes while the messages go on arriving, each ego message late by 50 ms.
    """
    from rosbags.rosbag2 import Reader

    from fastdrivevla_ros.data import topics
    from fastdrivevla_ros.data.ego_history import (EgoHistoryBuffer, odometry_sample,
                                                   status_sample)
    from fastdrivevla_ros.data.typestore import get_typestore

    store, ego = get_typestore("jazzy"), EgoHistoryBuffer()
    planners, timers, out, got = [], [], {}, {}

    def plan(k: int, stamp: float) -> None:
        out[k] = ego.history_when_covered(stamp, wait_s)[0]

    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic in (topics.ODOMETRY, topics.EGO_STATUS):
                add = ego.add_pose if conn.topic == topics.ODOMETRY else ego.add_status
                sample = (odometry_sample if conn.topic == topics.ODOMETRY else
                          status_sample)(msg)
                timers.append(threading.Timer(0.05, add, (sample,)))
                timers[-1].start()
            elif topics.camera_from_topic(conn.topic) in cameras:
                stamp = msg.header.stamp
                got[topics.camera_from_topic(conn.topic)] = \
                    (stamp.sec * 1_000_000_000 + stamp.nanosec) * 1e-9   # as the node's FrameSet
                if len(got) == len(cameras):          # the set is complete: plan it now
                    planners.append(threading.Thread(target=plan, args=(len(planners),
                                                                        got[cameras[0]])))
                    planners[-1].start()
                    got = {}
    for thread in timers + planners:
        thread.join()
    return [out[k] for k in range(len(planners))]


def test_the_node_prompts_the_offline_replays_history_on_every_keyframe(bag):
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.vla.prompt import CAMERAS

    offline = [f.history for f in BagFrames(bag)]
    node = node_histories(bag, CAMERAS, wait_s=5.0)
    assert len(node) == len(offline) == KEYFRAMES
    assert all(h is not None for h in offline)
    assert node == offline
