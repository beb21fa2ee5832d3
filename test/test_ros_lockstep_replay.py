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
launch_pytest: the lockstep ROS replay predicts what `fastdrivevla replay` predicts.

The real scene's first keyframes are converted with `fastdrivevla convert`, replayed offline
with `fastdrivevla replay`, and replayed through ROS with replay.launch.py (mode:=lockstep:
`ros2 bag play --start-paused` bursted keyframe by keyframe, the drive node, the evaluator)
while the drive node sleeps plan_delay_s before every plan, far slower than the bag's 0.5 s per
keyframe. Every keyframe must be scored, with the same sample tokens and the same waypoints to
the printed precision (2 decimals) as the offline run. Torch stays out of this process: the
model, the bag and the offline run are made by the CLI in subprocesses.
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import time

import pytest

pytest.importorskip('rclpy', reason='ROS 2 (rclpy) is not installed; the lockstep replay test '
                    'runs under colcon test')
launch_pytest = pytest.importorskip('launch_pytest', reason='launch_pytest is not installed')
pytest.importorskip('fastdrivevla_ros.msg', reason='fastdrivevla_ros is not built with colcon '
                    '(its messages are missing)')

import launch  # noqa: E402, I100
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scene import require_scene  # noqa: E402, I100

KEYFRAMES = 5
PLAN_DELAY_S = 3.0             # >> 0.5 s of bag time per keyframe: realtime play loses most
MODE = os.environ.get('FASTDRIVEVLA_TEST_REPLAY_MODE', 'lockstep')   # realtime: see it fail
TIMEOUT_S = 600.0
REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=600):
    subprocess.run([sys.executable, '-m', 'fastdrivevla_ros.cli', *map(str, args)],
                   check=True, timeout=timeout)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """Bag, tiny model, parameter file and the offline replay's run folder."""
    scene = require_scene()
    root = tmp_path_factory.mktemp('lockstep')
    cli('convert', '--dataroot', scene, '--version', 'v1.0-mini', '--scenes', 'scene-0916',
        '--out', root / 'bag', '--max-keyframes', KEYFRAMES)
    cli('make-tiny-model', root / 'model')
    params = yaml.safe_load((REPO / 'config' / 'drive.yaml').read_text())
    values = params['/**']['ros__parameters']
    values.update(model=str(root / 'model'), cameras=['CAM_FRONT'], max_pixels=112 * 112,
                  device='cpu', dtype='float32', plan_delay_s=PLAN_DELAY_S,
                  publish_heatmaps=False, pruner='random', pruning_ratio=0.5)  # seeded draws
    (root / 'params.yaml').write_text(yaml.safe_dump(params))
    cli('replay', root / 'bag', '--model', root / 'model', '--config', root / 'params.yaml',
        '--out', root / 'offline', '--no-progress')
    return root


@launch_pytest.fixture
def replay_launch(work):
    launch_file = PythonLaunchDescriptionSource([
        FindPackageShare('fastdrivevla_ros'), '/launch/replay.launch.py'])
    arguments = {'bag': str(work / 'bag'), 'model': str(work / 'model'),
                 'params_file': str(work / 'params.yaml'), 'output_dir': str(work / 'ros'),
                 'mode': MODE, 'keyframe_timeout_s': '120.0'}
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(launch_file,
                                                launch_arguments=arguments.items()),
        launch_pytest.actions.ReadyToTest()])


def final_metrics(run: Path) -> dict | None:
    """Return the evaluator's metrics.json once it is final (it adds plans_received last)."""
    try:
        metrics = json.loads((run / 'metrics.json').read_text())
    except (OSError, ValueError):
        return None
    return metrics if 'plans_received' in metrics else None


def predictions(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / 'predictions.jsonl').read_text().splitlines()]
    return {r['token']: [[round(v, 2) for v in p] for p in r['waypoints']] for r in rows}


@pytest.mark.launch(fixture=replay_launch)
def test_lockstep_replay_scores_every_keyframe_like_the_offline_replay(work):
    deadline = time.monotonic() + TIMEOUT_S
    while final_metrics(work / 'ros') is None and time.monotonic() < deadline:
        time.sleep(1.0)
    metrics = final_metrics(work / 'ros')
    assert metrics is not None, 'the ROS replay wrote no metrics.json'
    offline, ros = predictions(work / 'offline'), predictions(work / 'ros')
    assert metrics['missing_predictions'] == 0
    assert metrics['samples'] == json.loads((work / 'offline' / 'metrics.json').read_text())[
        'samples'] == KEYFRAMES
    assert list(ros) == list(offline)                     # same keyframes, in bag order
    assert len({str(w) for w in offline.values()}) > 1, 'the plans do not depend on the input'
    assert metrics['parse_failed'] == 0
    differ = [t for t in offline if ros[t] != offline[t]]
    assert not differ, f'{len(differ)} of {len(offline)} keyframes planned differently: ' \
                       f'{[(offline[t][:2], ros[t][:2]) for t in differ[:3]]}'
