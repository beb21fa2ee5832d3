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
launch_pytest: the drive node with the tiny model plans from six synchronised cameras.

Runs where ROS 2 is installed and the package is built (colcon test in the ros:humble /
ros:jazzy CI); skipped elsewhere. It publishes six JPEG CompressedImages with one stamp,
expects a PlannedTrajectory, per-camera heatmaps and the mosaic, sends a corrupt set (a
warning on /rosout) and then changes pruning_ratio at runtime through the parameter service (an
info; a bad value must be refused with a reason) and expects plans to continue: rclpy refuses a
logging call site that changes severity, which once stopped planning after the first warning.
It also checks that a bad configuration makes the node exit with a clear message.
"""

import io
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image as PILImage
import pytest

rclpy = pytest.importorskip('rclpy', reason='ROS 2 (rclpy) is not installed; the drive-node '
                            'launch test runs in the ROS 2 CI (colcon test)')
launch_pytest = pytest.importorskip('launch_pytest', reason='launch_pytest is not installed')
pytest.importorskip('fastdrivevla_ros.msg', reason='fastdrivevla_ros is not built with colcon '
                    '(its messages are missing)')

import launch  # noqa: E402, I100
from launch_ros.actions import Node  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from fastdrivevla_ros.msg import PlannedTrajectory  # noqa: E402,I100

CAMERAS = ['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT',
           'CAM_BACK_RIGHT']
NAMESPACE = '/fastdrivevla_test/cameras'
TIMEOUT_S = 240.0           # model load + first plans on a CI CPU


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """Write the tiny random Qwen2.5-VL with the CLI (keeps torch out of this process)."""
    path = tmp_path_factory.mktemp('tiny') / 'model'
    subprocess.run([sys.executable, '-m', 'fastdrivevla_ros.cli', 'make-tiny-model', str(path)],
                   check=True, timeout=600)
    return path


def node_parameters(model, **overrides) -> dict:
    params = {'model': str(model), 'cameras': CAMERAS, 'device': 'cpu', 'dtype': 'float32',
              'pruner': 'random', 'pruning_ratio': 0.5, 'max_pixels': 112 * 112,
              'constrained': False, 'max_new_tokens': 8, 'camera_namespace': NAMESPACE,
              'odom_topic': '', 'ego_status_topic': '', 'max_staleness_s': 60.0,
              'sync_slop_s': 0.05}
    params.update(overrides)
    return params


@pytest.fixture
def drive_proc(tiny_model):
    return Node(package='fastdrivevla_ros', executable='drive_node', name='fastdrivevla_drive',
                parameters=[node_parameters(tiny_model)], output='screen', cached_output=True,
                additional_env={'PYTHONUNBUFFERED': '1'})


@launch_pytest.fixture
def drive_launch(drive_proc):
    return launch.LaunchDescription([drive_proc, launch_pytest.actions.ReadyToTest()])


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:180, 0:320]
    rgb = np.stack([(xx + 40 * seed) % 256, yy % 256, rng.integers(0, 256, xx.shape)], -1)
    buf = io.BytesIO()
    PILImage.fromarray(rgb.astype(np.uint8)).save(buf, format='JPEG')
    return buf.getvalue()


class Harness:
    """A test node: camera publishers, output subscribers and a parameter client."""

    def __init__(self, inputs: str = NAMESPACE, outputs: str = ''):
        self.node = rclpy.create_node('fastdrivevla_drive_test')
        self.lock = threading.Lock()
        self.received = {'trajectory': [], 'heatmap': [], 'mosaic': [], 'rosout': [], 'tf': []}
        self.published_stamps = set()
        self.images = {cam: jpeg(i) for i, cam in enumerate(CAMERAS)}
        self.pubs = {cam: self.node.create_publisher(
            CompressedImage, f'{inputs}/{cam}/image_rect/compressed', 10) for cam in CAMERAS}
        self.node.create_subscription(PlannedTrajectory, f'{outputs}/planner/trajectory',
                                      lambda m: self._got('trajectory', m), 10)
        self.node.create_subscription(Image, f'{outputs}/planner/heatmap/CAM_FRONT',
                                      lambda m: self._got('heatmap', m), 10)
        self.node.create_subscription(Image, f'{outputs}/planner/heatmap/mosaic',
                                      lambda m: self._got('mosaic', m), 10)
        self.node.create_subscription(Log, '/rosout', self._on_rosout, 100)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(TFMessage, '/tf_static',
                                      lambda m: self._got('tf', m), latched)
        self.param_client = self.node.create_client(
            SetParameters, f'{outputs}/fastdrivevla_drive/set_parameters')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _got(self, key, msg):
        with self.lock:
            self.received[key].append(msg)

    def _on_rosout(self, msg):
        if msg.name.endswith('fastdrivevla_drive'):
            self._got('rosout', (msg.level, msg.msg))

    def publish_set(self, corrupt: str = ''):
        stamp = self.node.get_clock().now().to_msg()
        self.published_stamps.add((stamp.sec, stamp.nanosec))
        for cam, pub in self.pubs.items():
            data = b'not a jpeg' if cam == corrupt else self.images[cam]
            pub.publish(CompressedImage(header=Header(stamp=stamp, frame_id=cam),
                                        format='jpeg', data=data))

    def wait_for(self, predicate, timeout: float, corrupt: str = '') -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.received):
                    return True
            self.publish_set(corrupt)
            time.sleep(0.5)
        return False

    def set_parameter(self, name, value):
        assert self.param_client.wait_for_service(timeout_sec=30.0)
        request = SetParameters.Request(parameters=[Parameter(name, value=value)
                                                    .to_parameter_msg()])
        future = self.param_client.call_async(request)
        deadline = time.monotonic() + 30.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.done(), 'set_parameters timed out'
        return future.result().results[0]

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


WARN, INFO = 30, 20          # rcl_interfaces/msg/Log levels


def logged(received, level: int, text: str) -> bool:
    return any(lvl == level and text in msg for lvl, msg in received['rosout'])


@pytest.mark.launch(fixture=drive_launch)
def test_six_synced_cameras_give_a_trajectory_heatmaps_and_a_runtime_ratio_change():
    rclpy.init()
    harness = Harness()
    try:
        ok = harness.wait_for(lambda r: r['trajectory'] and r['heatmap'] and r['mosaic'],
                              TIMEOUT_S)
        assert ok, f'no trajectory + heatmaps within {TIMEOUT_S} s: ' \
                   f'{ {k: len(v) for k, v in harness.received.items()} }'
        traj = harness.received['trajectory'][0]
        assert len(traj.waypoints) == 6 and traj.status in ('ok', 'parse_failed')
        assert list(traj.cameras) == CAMERAS and traj.pruner == 'random'
        assert abs(traj.pruning_ratio - 0.5) < 1e-6 and 0 < traj.tokens_kept < traj.tokens_total
        assert (traj.header.stamp.sec, traj.header.stamp.nanosec) in harness.published_stamps
        assert traj.header.frame_id == 'base_link' and traj.engine_ms > 0.0
        heatmap, mosaic = harness.received['heatmap'][0], harness.received['mosaic'][0]
        assert heatmap.encoding == 'bgr8' and heatmap.height % 28 == 0
        assert len(heatmap.data) == heatmap.step * heatmap.height
        assert (mosaic.encoding, mosaic.height, mosaic.width) == ('bgr8', 392, 1008)
        # RViz's fixed frame base_link exists in TF: the node's static identity transform
        frames = [(t.header.frame_id, t.child_frame_id, t.transform.rotation.w)
                  for m in harness.received['tf'] for t in m.transforms]
        assert ('base_link', 'fastdrivevla_plan', 1.0) in frames, frames

        # a warning (corrupt image), then an info (runtime change): planning must go on
        assert harness.wait_for(lambda r: logged(r, WARN, 'frame dropped: CAM_BACK'), 60.0,
                                corrupt='CAM_BACK'), 'the corrupt set was not reported'
        refused = harness.set_parameter('pruning_ratio', 1.5)
        assert not refused.successful and 'pruning_ratio' in refused.reason
        accepted = harness.set_parameter('pruning_ratio', 0.75)
        assert accepted.successful, accepted.reason
        assert harness.wait_for(lambda r: any(abs(t.pruning_ratio - 0.75) < 1e-6
                                              for t in r['trajectory']), 120.0), \
            'no plan at the new pruning_ratio 0.75'
        assert harness.wait_for(lambda r: logged(r, INFO, 'applied'), 30.0)
        with harness.lock:
            count = len(harness.received['trajectory'])
        assert harness.wait_for(lambda r: len(r['trajectory']) > count + 1, 120.0), \
            'planning stopped after a warning followed by an info'
        assert not any('severity cannot be changed' in m for _, m in harness.received['rosout'])
    finally:
        harness.close()
        rclpy.shutdown()


@pytest.fixture
def namespaced_proc(tiny_model):
    """Run the node in /car1 with the default (relative) input topics."""
    params = node_parameters(tiny_model, cameras=CAMERAS[:2])
    del params['camera_namespace']
    return Node(package='fastdrivevla_ros', executable='drive_node', name='fastdrivevla_drive',
                namespace='car1', parameters=[params], output='screen', cached_output=True,
                additional_env={'PYTHONUNBUFFERED': '1'})


@launch_pytest.fixture
def namespaced_launch(namespaced_proc):
    return launch.LaunchDescription([namespaced_proc, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=namespaced_launch)
def test_a_namespace_moves_the_camera_inputs_with_the_outputs():
    rclpy.init()
    harness = Harness(inputs='/car1/cameras', outputs='/car1')
    try:
        assert harness.wait_for(lambda r: r['trajectory'], TIMEOUT_S), \
            'no plan on /car1/planner/trajectory from cameras on /car1/cameras/...'
        assert list(harness.received['trajectory'][0].cameras) == CAMERAS[:2]
    finally:
        harness.close()
        rclpy.shutdown()


@pytest.fixture
def bad_config_proc(tiny_model):
    return Node(package='fastdrivevla_ros', executable='drive_node', name='fastdrivevla_drive',
                parameters=[node_parameters(tiny_model, cameras=['CAM_FRONT', 'CAM_FRONTT'])],
                output='screen', cached_output=True, additional_env={'PYTHONUNBUFFERED': '1'})


@launch_pytest.fixture
def bad_config_launch(bad_config_proc):
    return launch.LaunchDescription([bad_config_proc, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=bad_config_launch)
def test_bad_configuration_exits_with_a_clear_message(bad_config_proc):
    deadline = time.monotonic() + 60.0
    while bad_config_proc.return_code is None and time.monotonic() < deadline:
        time.sleep(0.2)
    output = bad_config_proc.get_stdout() + bad_config_proc.get_stderr()
    assert bad_config_proc.return_code == 2, output
    assert 'bad configuration' in output and "unknown camera(s) ['CAM_FRONTT']" in output
    yield
