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
The drive node's view of the settings schema (vla/settings.py): checked values and updates.

The schema's one table gives the node its ParameterDescriptors (`descriptor_fields`), checks
config/drive.yaml (`validate_config`) and `ros2 param set` at runtime (`check_update`), so a
value the node rejects is rejected with the same reason by the CLI's `--config`.
"""

from __future__ import annotations

from typing import Any, Callable

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.vla.settings import (  # noqa: F401 (the node's names for the schema)
    check_values, engine_kwargs, image_size, load_parameter_file, NODE_NAME, PARAMETERS,
    ParamSpec, pruner_options_of, resolve_device, ROS_BUILTIN_PARAMETERS, settings_problems,
    SPECS)


class NodeConfig:
    """Validated parameter values, read as attributes (`cfg.pruning_ratio`)."""

    def __init__(self, values: dict[str, Any]):
        object.__setattr__(self, '_values', dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError('NodeConfig is immutable; use check_update()')

    def as_dict(self) -> dict[str, Any]:
        """Return a copy of all values."""
        return dict(self._values)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """Return the fixed (w, h) resize, or None to keep the aspect within max_pixels."""
        return image_size(self._values)

    def engine_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for DrivingVLA.from_pretrained (device/dtype resolved)."""
        return engine_kwargs(self._values)

    def pruner_options_dict(self) -> dict[str, Any]:
        """Return the pruner's checked constructor options (weights / untrained included)."""
        return pruner_options_of(self._values)

    def topic(self, camera: str) -> str:
        """Return the camera's input topic, e.g. cameras/CAM_FRONT/image_rect/compressed."""
        ns = self.camera_namespace
        base = f'{ns.rstrip("/")}/{camera}' if ns else camera
        base = f'{base}/{self.camera_image_name}'
        return base + '/compressed' if self.image_transport == 'compressed' else base


def _node_problems(values: dict[str, Any]) -> list[str]:
    """Return what the node needs beyond valid settings: a model, and live inputs only."""
    problems = []
    if not values['model']:
        problems.append('model: required; a checkpoint directory or hub id (e.g. '
                        '`fastdrivevla make-tiny-model /tmp/tiny` then model:=/tmp/tiny)')
    if values['pruner'] == 'mask_oracle':
        problems.append('pruner: mask_oracle needs ground-truth foreground masks, which a live '
                        'node does not have; use it in offline replay')
        return problems
    return problems + settings_problems(values)


def validate_config(values: dict[str, Any] | None = None) -> NodeConfig:
    """Defaults overridden by `values`, every parameter checked; one ConfigError lists all."""
    out, problems = check_values(dict(values or {}))
    if not problems:
        problems = _node_problems(out)
    if problems:
        raise ConfigError('invalid drive-node parameters:\n  - ' + '\n  - '.join(problems))
    return NodeConfig(out)


def check_update(config: NodeConfig, changes: dict[str, Any]) -> NodeConfig:
    """
    Validate a runtime change (`ros2 param set`); return the new config or raise ConfigError.

    Names outside the table (use_sim_time, qos overrides) are ignored: other parts of the node
    own them.
    """
    ours = {k: v for k, v in changes.items() if k in SPECS}
    for name, value in ours.items():
        spec = SPECS[name]
        ours[name] = spec.check(value)
        if not spec.runtime and ours[name] != getattr(config, name):
            raise ConfigError(f'{name} cannot change while the node runs; set it at launch '
                              'and restart the node')
    merged = config.as_dict() | ours
    problems = _node_problems(merged)
    if problems:
        raise ConfigError('; '.join(problems))
    return NodeConfig(merged)


class RuntimeUpdates:
    """
    `ros2 param set` in two steps: validate every change, apply it once ROS has set it.

    Jazzy calls on-set callbacks to validate and post-set callbacks after the values are set
    (`post_set=True`: `apply` runs from `post_set`). Humble has on-set callbacks only, so there
    `on_set` applies the change right after it validated.
    apply: receives the new NodeConfig.
    """

    def __init__(self, config: NodeConfig, apply: Callable[[NodeConfig], None], post_set: bool):
        self.config, self.apply, self.post_set_available = config, apply, post_set

    def on_set(self, changes: dict[str, Any]) -> str | None:
        """Validate `changes` (name -> value); return why they are refused, or None."""
        try:
            new = check_update(self.config, changes)
        except ConfigError as e:
            return str(e)
        if not self.post_set_available:
            self._commit(new)
        return None

    def post_set(self, changes: dict[str, Any]) -> None:
        """Apply changes ROS has set (validated by `on_set` before)."""
        self._commit(check_update(self.config, changes))

    def _commit(self, new: NodeConfig) -> None:
        self.config = new
        self.apply(new)


def descriptor_fields(spec: ParamSpec) -> dict[str, Any]:
    """Fields of the rcl_interfaces ParameterDescriptor for `spec` (ROS-free)."""
    choices = spec.allowed_choices()
    constraints = f'one of: {", ".join(choices)}' if choices else ''
    fields = {'description': spec.description, 'read_only': not spec.runtime,
              'additional_constraints': constraints,
              'floating_point_range': None, 'integer_range': None}
    if spec.kind == 'float' and spec.low is not None:
        fields['floating_point_range'] = (float(spec.low), float(spec.high))
    if spec.kind == 'int' and spec.low is not None:
        fields['integer_range'] = (int(spec.low), int(spec.high))
    return fields


def launch_value(name: str, text: str) -> Any:
    """
    Convert launch argument text for parameter `name` (or use_sim_time) to a checked value.

    `pruning_ratio:=0` becomes 0.0 here, so launch users need not know ROS' int/double rule.
    Imports nothing heavy: it runs inside `ros2 launch`.
    """
    kind = 'bool' if name == 'use_sim_time' else SPECS[name].kind
    value: Any = text
    if kind == 'bool':
        if text.lower() not in ('true', 'false'):
            raise ConfigError(f'launch argument {name}:={text!r} must be true or false')
        value = text.lower() == 'true'
    elif kind in ('int', 'float'):
        try:
            value = int(text) if kind == 'int' else float(text)
        except ValueError:
            raise ConfigError(f'launch argument {name}:={text!r} is not a number') from None
    elif kind != 'str':
        raise ConfigError(f'{name} cannot be set from a launch argument; use params_file')
    if kind == 'str':
        # checked by the node at start: checking pruner names here would import torch into
        # the `ros2 launch` process, which runs on the system Python
        return value
    return value if name == 'use_sim_time' else SPECS[name].check(value)
