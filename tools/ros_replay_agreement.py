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
Whole-scene check: the ROS replay (replay.launch.py) predicts what `fastdrivevla replay` does.

Converts a nuScenes scene (every keyframe), writes a tiny model and a parameter file (six
cameras, a pruner), replays the bag offline, then through ROS in each --modes mode, and prints
per mode: keyframes planned, how many agree with the offline replay (same reply text and
waypoints equal to 2 decimals), the lockstep timeouts and the wall time. Exit 0 when every
lockstep keyframe is planned and agrees, 1 otherwise, 2 on bad input. Run it where ROS 2 is
sourced and this package is built (`. install/setup.bash` of a colcon workspace), e.g.
  python3 tools/ros_replay_agreement.py --work /tmp/agree --modes lockstep realtime
"""

import argparse
from pathlib import Path
import re
import shutil
import subprocess
import sys
import time

import yaml

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO.parent / 'shared' / 'data' / 'nuscenes-scene-0916'


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line; bad input: one line, exit 2."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', type=Path, required=True,
                   help='new directory for the bag, model, parameters and run folders')
    p.add_argument('--dataroot', type=Path, default=SCENE,
                   help='nuScenes root holding the scene (default: %(default)s)')
    p.add_argument('--version', default='v1.0-mini', help='nuScenes table version (default: '
                   '%(default)s)')
    p.add_argument('--modes', nargs='+', choices=['lockstep', 'realtime'], default=['lockstep'],
                   help='ROS replay modes to run (default: lockstep)')
    p.add_argument('--rate', type=float, default=1.0,
                   help='realtime mode: bag play rate (default: %(default)s)')
    p.add_argument('--pruner', default='random', help='pruner (default: %(default)s)')
    p.add_argument('--pruning-ratio', type=float, default=0.5,
                   help='pruning ratio (default: %(default)s)')
    p.add_argument('--max-pixels', type=int, default=262144,
                   help='per-image pixel budget (default: %(default)s)')
    p.add_argument('--keyframe-timeout', type=float, default=120.0,
                   help='lockstep mode: seconds to wait for one plan (default: %(default)s)')
    args = p.parse_args(argv)
    problems = [f'--work {args.work} exists' if args.work.exists() else '',
                '' if (args.dataroot / args.version).is_dir() else
                f'--dataroot {args.dataroot} has no {args.version}/',
                '' if args.rate > 0 else '--rate must be > 0',
                '' if shutil.which('ros2') else 'ros2 not found: source ROS 2 and the '
                'workspace holding fastdrivevla_ros (install/setup.bash)']
    if any(problems):
        p.exit(2, f'ros_replay_agreement: {"; ".join(filter(None, problems))}\n')
    return args


def cli(*args) -> None:
    """Run one `fastdrivevla` command, failing on error."""
    subprocess.run([sys.executable, '-m', 'fastdrivevla_ros.cli', *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def prepare(args) -> Path:
    """Bag, tiny model, parameter file and the offline run under args.work; the params path."""
    work = args.work
    cli('convert', '--dataroot', args.dataroot, '--version', args.version, '--out', work / 'bag')
    cli('make-tiny-model', work / 'model')
    params = yaml.safe_load((REPO / 'config' / 'drive.yaml').read_text())
    params['/**']['ros__parameters'].update(
        model=str(work / 'model'), device='cpu', dtype='float32', pruner=args.pruner,
        pruning_ratio=args.pruning_ratio, max_pixels=args.max_pixels, draft='none',
        publish_heatmaps=False)
    (work / 'params.yaml').write_text(yaml.safe_dump(params))
    cli('replay', work / 'bag', '--config', work / 'params.yaml', '--out', work / 'offline',
        '--no-progress')
    return work / 'params.yaml'


def launch(args, params: Path, mode: str) -> tuple[float, int]:
    """Run replay.launch.py in `mode`; return (wall seconds, lockstep timeouts logged)."""
    out = args.work / mode
    cmd = ['ros2', 'launch', 'fastdrivevla_ros', 'replay.launch.py', f'bag:={args.work / "bag"}',
           f'model:={args.work / "model"}', f'params_file:={params}', f'output_dir:={out}',
           f'mode:={mode}', f'rate:={args.rate}', f'keyframe_timeout_s:={args.keyframe_timeout}']
    start = time.monotonic()
    with open(args.work / f'{mode}.log', 'w') as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - start
    summary = re.search(r'played in lockstep, \d+ planned(?:, (\d+) timed out)?',
                        (args.work / f'{mode}.log').read_text())
    return wall, int(summary and summary[1] or 0)


def predictions(run: Path) -> dict:
    """{sample token: (reply text, waypoints rounded to 2 decimals)} of a run folder."""
    from fastdrivevla_ros.eval.store import PredictionStore, PREDICTIONS

    return {t: (r['text'], [[round(v, 2) for v in p] for p in r['waypoints']])
            for t, r in PredictionStore(run / PREDICTIONS).records.items()}


def main(argv=None) -> int:
    """Run the check; return the exit code."""
    args = parse_args(argv)
    args.work.mkdir(parents=True)
    params = prepare(args)
    offline = predictions(args.work / 'offline')
    print(f'offline: {len(offline)} keyframes, {len({str(w) for _, w in offline.values()})} '
          'distinct plans')
    ok = True
    for mode in args.modes:
        wall, timeouts = launch(args, params, mode)
        ros = predictions(args.work / mode)
        agree = sum(offline.get(t) == p for t, p in ros.items())
        print(f'{mode}: planned {len(ros)}/{len(offline)}, agree {agree}, timeouts {timeouts}, '
              f'wall {wall:.0f} s')
        if mode == 'lockstep':
            ok = ok and agree == len(offline) == len(ros)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
