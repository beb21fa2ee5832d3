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

"""Drive-node parameters: one table validates YAML, launch values and runtime changes."""

import array
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pipeline.params import (
    check_update, descriptor_fields, load_parameter_file, PARAMETERS, RuntimeUpdates, SPECS,
    validate_config)
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_yaml(tmp_path, body: str) -> Path:
    path = tmp_path / 'params.yaml'
    path.write_text(body)
    return path


def test_shipped_drive_yaml_lists_every_parameter_and_validates():
    values = load_parameter_file(REPO / 'config' / 'drive.yaml')
    assert set(values) == {p.name for p in PARAMETERS if not p.optional}
    assert '# view_ratios: [' in (REPO / 'config' / 'drive.yaml').read_text()
    config = validate_config(values | {'model': '/models/impromptu-vla'})
    assert config.pruning_ratio == values['pruning_ratio']
    assert config.topic('CAM_FRONT') == 'cameras/CAM_FRONT/image_rect/compressed'


def test_shipped_drive_yaml_syncs_the_six_nuscenes_cameras():
    values = load_parameter_file(REPO / 'config' / 'drive.yaml')
    assert values['cameras'] == ['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK',
                                 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']


def test_shipped_drive_yaml_without_model_fails_with_actionable_message():
    values = load_parameter_file(REPO / 'config' / 'drive.yaml')
    with pytest.raises(ConfigError, match='model: required.*make-tiny-model'):
        validate_config(values)


def test_typo_and_integer_for_double_are_reported_together(tmp_path):
    path = write_yaml(tmp_path, '/**:\n  ros__parameters:\n    model: m\n'
                                '    pruning_ration: 0.3\n    pruning_ratio: 1\n')
    with pytest.raises(ConfigError) as err:
        validate_config(load_parameter_file(path))
    message = str(err.value)
    assert "unknown parameter 'pruning_ration'; did you mean 'pruning_ratio'?" in message
    assert 'pruning_ratio: expected a float, got 1 (write 1.0' in message


def test_node_named_section_is_read_and_malformed_file_is_refused(tmp_path):
    good = write_yaml(tmp_path, 'fastdrivevla_drive:\n  ros__parameters:\n    pruner: random\n')
    assert load_parameter_file(good) == {'pruner': 'random'}
    bad = write_yaml(tmp_path, '/**:\n  pruner: random\n')
    with pytest.raises(ConfigError, match='ros__parameters'):
        load_parameter_file(bad)


@pytest.mark.parametrize('values, reason', [
    ({'pruning_ratio': 1.0}, r'pruning_ratio: 1.0 is outside \[0.0, 0.99\]'),
    ({'pruning_ratio': float('nan')}, 'not a finite number'),
    ({'cameras': ['CAM_FRONT', 'CAM_FRONT']}, '1-6 distinct cameras'),
    ({'cameras': ['front']}, 'unknown camera'),
    ({'pruner': 'reconn'}, "pruner: 'reconn' is not one of"),
    ({'pruner': 'mask_oracle'}, 'ground-truth foreground masks'),
    ({'device': 'gpu0'}, 'not a device'),
    ({'image_width': 1596}, 'both 0 .keep aspect. or both >= 28'),
    ({'camera_namespace': 'cam era'}, 'not a valid ROS topic name'),
    ({'sync_queue_size': 0}, r'sync_queue_size: 0 is outside \[1, 30\]'),
    ({'view_ratios': [0.5, 0.5]}, 'view_ratios: 2 ratios for 1 cameras'),
    ({'view_ratios': [0.5, 1] + [0.5] * 4}, 'expected a non-empty list of floats'),
    ({'view_ratios': [0.5, 1.0] + [0.5] * 4}, r'view_ratios: 1.0 is outside'),
])
def test_bad_values_are_rejected_with_a_reason(values, reason):
    with pytest.raises(ConfigError, match=reason):
        validate_config({'model': 'm'} | values)


def test_per_camera_ratios_from_search_budgets_are_accepted_and_passed_to_the_engine():
    config = validate_config({'model': 'm', 'cameras': ['CAM_FRONT', 'CAM_BACK'],
                              'view_ratios': [0.25, 0.75]})
    assert config.view_ratios == (0.25, 0.75)
    assert config.engine_kwargs()['view_ratios'] == (0.25, 0.75)
    assert validate_config({'model': 'm'}).engine_kwargs()['view_ratios'] is None
    # rclpy hands double arrays over as array('d')
    changed = check_update(config, {'view_ratios': array.array('d', [0.5, 0.5])})
    assert changed.view_ratios == (0.5, 0.5)


def test_runtime_pruning_ratio_change_is_validated():
    config = validate_config({'model': 'm', 'pruning_ratio': 0.5})
    assert check_update(config, {'pruning_ratio': 0.75}).pruning_ratio == 0.75
    assert config.pruning_ratio == 0.5   # the old config is untouched
    with pytest.raises(ConfigError, match='outside'):
        check_update(config, {'pruning_ratio': 1.5})
    with pytest.raises(ConfigError, match='expected a float'):
        check_update(config, {'pruning_ratio': 1})


def test_startup_only_parameters_refuse_runtime_changes_but_others_pass_through():
    config = validate_config({'model': 'm'})
    with pytest.raises(ConfigError, match='pruner cannot change while the node runs'):
        check_update(config, {'pruner': 'random'})
    # same value again (e.g. a list from rclpy for a tuple default) is not a change
    assert check_update(config, {'cameras': list(config.cameras)}).cameras == config.cameras
    # parameters the table does not own (rclpy's use_sim_time) are left to their owners
    assert check_update(config, {'use_sim_time': True}).as_dict() == config.as_dict()


def test_descriptors_carry_ranges_choices_and_read_only():
    ratio = descriptor_fields(SPECS['pruning_ratio'])
    assert ratio['floating_point_range'] == (0.0, 0.99) and not ratio['read_only']
    queue = descriptor_fields(SPECS['sync_queue_size'])
    assert queue['integer_range'] == (1, 30) and queue['read_only']
    assert 'random' in descriptor_fields(SPECS['pruner'])['additional_constraints']
    assert all(descriptor_fields(p)['description'] for p in PARAMETERS)


def test_engine_kwargs_resolve_auto_device_and_dtype_on_cpu():
    config = validate_config({'model': 'm', 'device': 'cpu', 'image_width': 1596,
                              'image_height': 1596, 'pruner': 'recon', 'pruner_weights': '/w'})
    kwargs = config.engine_kwargs()
    assert kwargs['dtype'] == 'float32' and kwargs['image_size'] == (1596, 1596)
    assert kwargs['pruner_options'] == {'weights': '/w'}
    assert validate_config({'model': 'm', 'device': 'cuda'}).engine_kwargs()['dtype'] == \
        'bfloat16'


def test_docs_parameter_table_lists_every_parameter_with_its_default():
    docs = (REPO / 'docs' / 'ros.md').read_text()
    for spec in PARAMETERS:
        default = spec.default
        if spec.optional:
            default = 'unset'
        elif spec.kind == 'str_list':
            default = '[' + ', '.join(default) + ']'
        elif spec.kind == 'str':
            default = f'"{default}"'
        elif spec.kind == 'bool':
            default = str(default).lower()
        row = f'| `{spec.name}` | {spec.kind} | `{default}` |'
        assert row in docs, f'docs/ros.md parameter table is out of date for {spec.name}'


def test_learned_pruner_needs_weights_or_the_explicit_untrained_switch():
    with pytest.raises(ConfigError, match="pruner 'recon' is learned: give its trained weights"):
        validate_config({'model': 'm', 'pruner': 'recon'})
    with pytest.raises(ConfigError, match='not both'):
        validate_config({'model': 'm', 'pruner': 'recon', 'pruner_weights': '/w',
                         'untrained': True})
    with pytest.raises(ConfigError, match="'random' is not learned"):
        validate_config({'model': 'm', 'pruner': 'random', 'untrained': True})
    untrained = validate_config({'model': 'm', 'pruner': 'recon', 'untrained': True})
    assert untrained.engine_kwargs()['pruner_options'] == {'untrained': True}


def test_pruner_options_reach_the_pruner_and_unknown_names_are_refused():
    fastv = validate_config({'model': 'm', 'pruner': 'fastv', 'pruner_options': '{"layer": 3}'})
    assert fastv.engine_kwargs()['pruner_options'] == {'layer': 3}
    split = validate_config({'model': 'm', 'pruner': 'vispruner',
                             'pruner_options': '{"important_ratio": 0.3}'})
    assert split.engine_kwargs()['pruner_options'] == {'important_ratio': 0.3}
    with pytest.raises(ConfigError, match="'layr'; it takes: layer$"):
        validate_config({'model': 'm', 'pruner': 'fastv', 'pruner_options': '{"layr": 3}'})
    with pytest.raises(ConfigError, match='not valid JSON'):
        validate_config({'model': 'm', 'pruner': 'fastv', 'pruner_options': '{layer: 3}'})


@pytest.mark.parametrize('post_set', [True, False], ids=['jazzy', 'humble'])
def test_runtime_changes_are_validated_then_applied_once_set(post_set):
    """Jazzy applies in its post-set callback (after ROS set the value); Humble in on-set."""
    applied = []
    updates = RuntimeUpdates(validate_config({'model': 'm'}), applied.append, post_set)
    assert 'outside' in updates.on_set({'pruning_ratio': 1.5})
    assert 'cannot change while the node runs' in updates.on_set({'pruner': 'random'})
    assert applied == [] and updates.config.pruning_ratio == 0.0
    assert updates.on_set({'pruning_ratio': 0.75, 'use_sim_time': True}) is None
    if post_set:
        assert applied == []                  # another on-set callback may still refuse it
        updates.post_set({'pruning_ratio': 0.75, 'use_sim_time': True})
    assert [c.pruning_ratio for c in applied] == [0.75]
    assert updates.config.pruning_ratio == 0.75


def test_input_topics_are_relative_so_a_namespace_moves_them():
    config = validate_config({'model': 'm'})
    assert config.topic('CAM_FRONT') == 'cameras/CAM_FRONT/image_rect/compressed'
    assert not config.odom_topic.startswith('/') and not config.ego_status_topic.startswith('/')
    raw = validate_config({'model': 'm', 'camera_namespace': '', 'image_transport': 'raw'})
    assert raw.topic('CAM_BACK') == 'CAM_BACK/image_rect'
    absolute = validate_config({'model': 'm', 'camera_namespace': '/car1/cameras'})
    assert absolute.topic('CAM_BACK') == '/car1/cameras/CAM_BACK/image_rect/compressed'
    with pytest.raises(ConfigError, match='not a tf2 frame id'):
        validate_config({'model': 'm', 'plan_frame': '/fastdrivevla_plan'})
