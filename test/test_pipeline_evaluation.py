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

"""Live-replay evaluation: plans matched to keyframes by stamp, scored like offline replay."""

import json
import re

from fastdrivevla_ros.data.bag_reader import PlanningTarget
from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pipeline.evaluation import (
    Keyframe, result_from_trajectory, StreamEvaluator)
from fastdrivevla_ros.pipeline.messages import trajectory_fields
from fastdrivevla_ros.vla.result import PlanResult, ViewResult
import numpy as np
import pytest

S = 1_000_000_000          # ns per second
T0 = 1_533_151_600 * S
FUTURE = np.array([[2.0 * (i + 1), 0.0] for i in range(6)])


def keyframe(k: int) -> Keyframe:
    target = PlanningTarget(token=f'kf{k}', future=FUTURE, valid=np.ones(6, bool))
    return Keyframe(T0 + k * S // 2, target, 'scene-token', 'scene-0916', k)


def plan_result(dx: float, pruner: str = 'random', ratio: float = 0.5) -> dict:
    """Return a published plan offset by dx metres forward from the ground truth."""
    result = PlanResult(waypoints=FUTURE + [dx, 0.0], status='ok', text='<PLANNING>',
                        views=[ViewResult('CAM_FRONT', (2, 3), np.arange(3))],
                        pruner=pruner, pruning_ratio=ratio,
                        timings_ms={'vision': 10.0, 'prefill': 20.0, 'decode': 30.0,
                                    'total': 60.0}, num_generated=40, decode_passes=17,
                        draft_tokens=22, accepted_tokens=9)
    return result_from_trajectory(trajectory_fields(result, T0, 'base_link', latency_ms=90.0))


def test_trajectory_fields_become_the_offline_prediction_record_shape():
    result = plan_result(1.0)
    assert result['waypoints'][0] == [3.0, 0.0]
    assert (result['status'], result['pruner'], result['pruning_ratio']) == ('ok', 'random', 0.5)
    assert (result['tokens_kept'], result['tokens_total']) == (3, 6)
    assert (result['num_generated'], result['decode_passes']) == (40, 17)
    assert (result['draft_tokens'], result['accepted_tokens']) == (22, 9)
    assert result['timings_ms'] == {'preprocess': 0.0, 'vision': 10.0, 'scoring': 0.0,
                                    'prefill': 20.0, 'decode': 30.0, 'total': 60.0}
    assert result['views'] == [{'camera': 'CAM_FRONT', 'tokens_kept': 3, 'tokens_total': 6}]


def test_plans_match_nearest_keyframe_and_unplanned_keyframes_are_missing(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1, bag='/bags/scene-0916')
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0 + 12_000_000, plan_result(1.0))          # CAM_FRONT 12 ms after LiDAR
    ev.add_keyframe(keyframe(1))                            # the node was busy: no plan
    ev.add_keyframe(keyframe(2))
    ev.add_plan(T0 + S + 90_000_000, plan_result(5.0))     # 90 ms off: a worse candidate
    ev.add_plan(T0 + S + 20_000_000, plan_result(2.0))     # nearest to keyframe 2
    metrics = ev.finish()
    records = [json.loads(line) for line in (tmp_path / 'run' / 'predictions.jsonl')
               .read_text().splitlines()]
    assert [r['token'] for r in records] == ['kf0', 'kf2']
    assert [r['metrics']['l2'][0] for r in records] == [1.0, 2.0]
    assert metrics['samples'] == 2 and metrics['missing_predictions'] == 1
    assert metrics['l2_cm']['3s'] == pytest.approx(150.0)
    shard = json.loads((tmp_path / 'run' / 'shard.json').read_text())
    assert shard['missing'] == ['kf1'] and shard['complete'] is False
    assert (tmp_path / 'run' / 'report.md').is_file()
    on_disk = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert on_disk['missing_predictions'] == 1 and on_disk['pruner'] == 'random'


def test_a_keyframe_settles_only_when_no_closer_plan_can_come(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1)
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0 + 80_000_000, plan_result(3.0))
    assert ev.pending and not ev.store.records            # a closer plan may still arrive
    ev.add_plan(T0 + 150_000_000, plan_result(4.0))       # newer than stamp + tolerance
    assert not ev.pending and ev.store.records['kf0']['waypoints'][0] == [5.0, 0.0]


def test_plan_beyond_tolerance_is_not_used(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.05)
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0 + 70_000_000, plan_result(1.0))
    metrics = ev.finish()
    assert metrics['samples'] == 0 and ev.missing == ['kf0']


def test_looping_bag_counts_each_keyframe_once(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1)
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0, plan_result(1.0))
    ev.add_plan(T0 + S, plan_result(1.0))
    ev.add_keyframe(keyframe(0))
    assert ev.expected == ['kf0'] and len(ev.store.records) == 1


# ---------------------------------------------------------------- messages, durability, idleness
@pytest.fixture(scope='module')
def ts():
    from fastdrivevla_ros.data.typestore import get_typestore

    return get_typestore('jazzy')


def gt_message(ts, k: int, future=FUTURE):
    from test_pipeline_messages import build

    stamp = T0 + k * S // 2
    return build(ts, 'fastdrivevla_ros/msg/PlanningGroundTruth', {
        'header': {'stamp': {'sec': stamp // S, 'nanosec': stamp % S}, 'frame_id': 'base_link'},
        'sample_token': f'kf{k}', 'scene_token': 'scene-token', 'scene_name': 'scene-0916',
        'index_in_scene': k, 'step_dt': 0.5,
        'future': [{'x': x, 'y': y, 'z': 0.0} for x, y in future],
        'future_valid': [True] * len(future), 'drivable_source': 'none'})


def plan_message(ts, stamp: int, dx: float):
    from test_pipeline_messages import build

    result = PlanResult(waypoints=FUTURE + [dx, 0.0], status='ok', text='<PLANNING>',
                        views=[ViewResult('CAM_FRONT', (2, 3), np.arange(3))],
                        pruner='random', pruning_ratio=0.5, timings_ms={'total': 60.0})
    return build(ts, 'fastdrivevla_ros/msg/PlannedTrajectory',
                 trajectory_fields(result, stamp, 'base_link', latency_ms=90.0))


def test_malformed_messages_are_counted_and_the_evaluation_goes_on(tmp_path, ts):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1)
    assert ev.ground_truth_message(gt_message(ts, 0)) is None
    short = gt_message(ts, 1, future=FUTURE[:5])                       # 5 future points
    assert 'ground_truth message skipped' in ev.ground_truth_message(short)
    headerless = plan_message(ts, T0, 1.0)
    del headerless.header                                             # not a PlannedTrajectory
    assert 'AttributeError' in ev.plan_message(headerless)
    nan = plan_message(ts, T0, 1.0)
    nan.waypoints[2].x = float('nan')
    assert 'not a finite number' in ev.plan_message(nan)
    assert ev.plan_message(plan_message(ts, T0 + 10_000_000, 1.0)) is None
    metrics = ev.finish()
    assert metrics['samples'] == 1 and metrics['l2_cm']['3s'] == pytest.approx(100.0)
    assert metrics['malformed_messages'] == {'ground_truth': 1, 'plan': 2}
    on_disk = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert on_disk['malformed_messages'] == {'ground_truth': 1, 'plan': 2}


def test_predictions_are_on_disk_as_they_settle_and_a_restart_resumes(tmp_path, ts):
    run = tmp_path / 'run'
    ev = StreamEvaluator(run, tolerance_s=0.1)
    for k in (0, 1):
        ev.ground_truth_message(gt_message(ts, k))
        ev.plan_message(plan_message(ts, T0 + k * S // 2 + 10_000_000, 1.0))
    ev.plan_message(plan_message(ts, T0 + S, 1.0))       # settles keyframe 1
    lines = (run / 'predictions.jsonl').read_text().splitlines()
    assert [json.loads(line)['token'] for line in lines] == ['kf0', 'kf1']   # before finish
    assert not (run / 'metrics.json').exists()
    ev.close()               # killed here (the lock goes with the process); a rerun resumes
    again = StreamEvaluator(run, tolerance_s=0.1)
    again.ground_truth_message(gt_message(ts, 1))        # already scored: not twice
    again.ground_truth_message(gt_message(ts, 2))
    again.plan_message(plan_message(ts, T0 + S + 10_000_000, 1.0))
    metrics = again.finish()
    assert metrics['samples'] == 3 and metrics['missing_predictions'] == 0
    shard = json.loads((run / 'shard.json').read_text())
    assert shard['expected'] == ['kf0', 'kf1', 'kf2'] and shard['complete']


# ---------------------------------------------------------------- one run per folder
def _fake_bag(tmp_path):
    """Make a bag directory as far as its identity goes (bag_id reads metadata.yaml)."""
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information:\n  message_count: 12\n')
    return bag


def _scored_run(run, **kwargs):
    """Return an evaluator (still open) that scored keyframe 0 with a random@0.5 plan."""
    ev = StreamEvaluator(run, tolerance_s=0.1, **kwargs)
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0 + 10_000_000, plan_result(1.0))
    ev.add_plan(T0 + S, plan_result(1.0))                   # settles keyframe 0
    assert list(ev.store.records) == ['kf0']
    return ev


def test_the_manifest_is_written_at_the_first_plan_before_any_prediction(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1, model='/models/impromptu-vla')
    ev.add_keyframe(keyframe(0))
    ev.add_plan(T0 + 10_000_000, plan_result(1.0))          # kf0 not settled yet
    assert not ev.store.records
    shard = json.loads((tmp_path / 'run' / 'shard.json').read_text())
    assert (shard['source'], shard['pruner'], shard['pruning_ratio']) == \
        ('ros replay_evaluator', 'random', 0.5)
    assert shard['settings']['cameras'] == ['CAM_FRONT'] and shard['complete'] is False
    assert shard['model'] == '/models/impromptu-vla' and 'dtype' in shard['not_published']
    ev.close()


def test_a_resume_with_other_settings_is_refused_and_nothing_written(tmp_path):
    run = tmp_path / 'run'
    _scored_run(run).close()                                 # killed after one keyframe
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    again = StreamEvaluator(run, tolerance_s=0.1)
    again.add_keyframe(keyframe(1))
    with pytest.raises(ConfigError, match="holds a different run .*pruner: 'random' != 'fastv'"):
        again.add_plan(T0 + S // 2 + 10_000_000, plan_result(1.0, 'fastv', 0.3))
    assert again.finish() is None
    again.close()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_plans_with_settings_changed_at_runtime_go_to_their_own_run_folder(tmp_path):
    run = tmp_path / 'run'
    ev = _scored_run(run)                                   # random @ 0.5 owns run/
    for k, ratio in ((3, 0.75), (4, 0.75), (5, 0.25)):      # a `ros2 param set` sweep
        ev.add_keyframe(keyframe(k))
        ev.add_plan(T0 + k * S // 2 + 10_000_000, plan_result(1.0, 'random', ratio))
    metrics = ev.finish()
    ev.close()
    assert metrics['plans_with_other_settings'] == 3 and ev.missing == []
    assert metrics['runs_with_other_settings'] == {'random-0.75': 2, 'random-0.25': 1}
    assert [r['token'] for r in ev.store.ordered()] == ['kf0']
    for name, ratio, tokens in (('random-0.75', 0.75, ['kf3', 'kf4']),
                                ('random-0.25', 0.25, ['kf5'])):
        folder = run / name
        shard = json.loads((folder / 'shard.json').read_text())
        assert shard['pruning_ratio'] == ratio and shard['expected'] == tokens
        rows = [json.loads(line) for line in (folder / 'predictions.jsonl').read_text()
                .splitlines()]
        assert [r['token'] for r in rows] == tokens
        assert {r['pruning_ratio'] for r in rows} == {ratio}
        assert json.loads((folder / 'metrics.json').read_text())['samples'] == len(tokens)
    # `report` compares them: one row per settings set, with its sample count
    from fastdrivevla_ros.eval.report import compare
    table = compare([run, run / 'random-0.75', run / 'random-0.25'], tmp_path / 'table',
                    own_samples=True).read_text()
    assert '| Method | Samples |' in table
    rows = re.findall(r'^\| random[^|]* \| (\d+) \| \d', table, re.M)
    assert sorted(map(int, rows)) == [1, 1, 2], table


def test_a_second_evaluator_on_a_held_folder_is_refused(tmp_path):
    run = tmp_path / 'run'
    first = _scored_run(run)
    with pytest.raises(ConfigError, match='being written by another replay or replay evaluator'):
        StreamEvaluator(run, tolerance_s=0.1)
    first.add_keyframe(keyframe(2))                          # the first goes on untouched
    first.add_plan(T0 + S + 10_000_000, plan_result(1.0))
    assert first.finish()['samples'] == 2
    first.close()
    StreamEvaluator(run, tolerance_s=0.1).close()            # released: resumable again


def test_a_cli_replay_folder_is_refused_by_the_evaluator(tmp_path):
    from fastdrivevla_ros.eval.replay import run_manifest
    from fastdrivevla_ros.eval.run_folder import open_run_folder

    bag, run = _fake_bag(tmp_path), tmp_path / 'run'
    with open_run_folder(run, run_manifest(bag, (0, 1))):   # `fastdrivevla replay --out run`
        pass
    with pytest.raises(ConfigError, match="source: 'fastdrivevla replay' != 'ros replay_eval"):
        StreamEvaluator(run, tolerance_s=0.1, bag=str(bag))
    assert sorted(p.name for p in run.iterdir()) == ['.lock', 'shard.json']


def test_the_cli_replay_refuses_an_evaluator_folder(tmp_path):
    from fastdrivevla_ros.eval.replay import run_manifest
    from fastdrivevla_ros.eval.run_folder import check_not_busy, open_run_folder

    bag, run = _fake_bag(tmp_path), tmp_path / 'run'
    ev = _scored_run(run, bag=str(bag))
    with pytest.raises(ConfigError, match='being written by another replay'):
        check_not_busy(run)                                  # `replay` while the node runs
    ev.close()
    with pytest.raises(ConfigError, match="source: 'ros replay_evaluator' != 'fastdrivevla"):
        with open_run_folder(run, run_manifest(bag, (0, 1))):
            pass


def test_an_evaluator_that_never_got_a_plan_leaves_no_folder(tmp_path):
    ev = StreamEvaluator(tmp_path / 'run', tolerance_s=0.1)
    ev.add_keyframe(keyframe(0))                             # the drive node never planned
    assert ev.finish() is None
    ev.close()
    assert not (tmp_path / 'run').exists()


def test_idle_watch_runs_on_its_own_clock_and_arms_on_the_first_message():
    from fastdrivevla_ros.pipeline.evaluation import IdleWatch

    now = [100.0]
    watch = IdleWatch(30.0, clock=lambda: now[0])
    now[0] += 1000.0
    assert not watch.expired()            # nothing arrived yet (the model is still loading)
    watch.touch()
    now[0] += 29.0
    assert not watch.expired()
    now[0] += 2.0
    assert watch.expired()
    assert not IdleWatch(0.0, clock=lambda: now[0]).expired()
