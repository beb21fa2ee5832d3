"""
Every setting a user configures, declared once: type, default, range, description, mutability.

One table serves every place a setting enters: the drive node's ParameterDescriptors and
`ros2 param set` checks (pipeline/params.py), each CLI command's flags and `--config YAML`
(cli/settings.py), and PlannerSettings' defaults (vla/engine.py). A ROS 2 parameter file
(config/drive.yaml, or what `search-budgets` writes) therefore runs the same in the node and
the CLI, and a value one rejects the other rejects with the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
import difflib
import math
from pathlib import Path
import re
from typing import Any, Callable, Sequence

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.vla.prompt import CAMERAS
import yaml

NODE_NAME = 'fastdrivevla_drive'
ROS_BUILTIN_PARAMETERS = ('use_sim_time',)   # declared by rclpy itself
_TOPIC = re.compile(r'^[~/]?[A-Za-z_][A-Za-z0-9_/]*$')
_DEVICE = re.compile(r'^(auto|cpu|cuda(:\d+)?|mps)$')


def _pruner_names() -> tuple[str, ...]:
    from fastdrivevla_ros.pruning.registry import available_pruners

    return tuple(available_pruners())


def _cameras_problem(value: list[str]) -> str | None:
    unknown = [c for c in value if c not in CAMERAS]
    if unknown:
        return f'unknown camera(s) {unknown}; use nuScenes channel names {list(CAMERAS)}'
    if len(set(value)) != len(value) or not 1 <= len(value) <= 6:
        return f'1-6 distinct cameras are needed, got {value}'
    return None


def _topic_problem(value: str) -> str | None:
    if not _TOPIC.match(value) or '//' in value or (value.endswith('/') and value != '/'):
        return f'{value!r} is not a valid ROS topic name'
    return None


def _frame_problem(value: str) -> str | None:
    if value.startswith('/') or not _TOPIC.match(value):
        return f'{value!r} is not a tf2 frame id (no leading slash)'
    return None


def _device_problem(value: str) -> str | None:
    if not _DEVICE.match(value):
        return f'{value!r} is not a device; use auto, cpu, cuda or cuda:N'
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. `kind` follows the default's type; `low`/`high` are inclusive."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    runtime: bool = False              # changeable with `ros2 param set` while running
    problem: Callable[[Any], str | None] | None = None   # extra check -> reason or None
    kind_: str | None = None           # for a parameter without default (None = unset)

    @property
    def optional(self) -> bool:
        """Return True when the parameter may stay unset (its default is None)."""
        return self.default is None

    @property
    def kind(self) -> str:
        """Return 'bool', 'int', 'float', 'str', 'str_list' or 'float_list'."""
        if self.kind_ is not None:
            return self.kind_
        if isinstance(self.default, bool):
            return 'bool'
        if isinstance(self.default, (list, tuple)):
            return 'str_list'
        return {int: 'int', float: 'float', str: 'str'}[type(self.default)]

    def allowed_choices(self) -> tuple[str, ...] | None:
        """Return the allowed values of a string parameter (None: any)."""
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any) -> Any:
        """Return `value` normalised (lists become tuples), or raise ConfigError saying why."""
        if value is None and self.optional:
            return None
        value = self._check_type(value)
        numbers = value if self.kind == 'float_list' else \
            (value,) if self.kind in ('int', 'float') else ()
        for number in numbers:
            if not math.isfinite(number):
                raise ConfigError(f'{self.name}: {number} is not a finite number')
            if (self.low is not None and number < self.low) or \
                    (self.high is not None and number > self.high):
                raise ConfigError(f'{self.name}: {number} is outside [{self.low}, {self.high}]')
        choices = self.allowed_choices()
        if choices is not None and value not in choices:
            raise ConfigError(f'{self.name}: {value!r} is not one of {list(choices)}')
        reason = self.problem(value) if self.problem else None
        if reason:
            raise ConfigError(f'{self.name}: {reason}')
        return value

    def _check_type(self, value: Any) -> Any:
        kind = self.kind
        if kind == 'bool' and isinstance(value, bool):
            return value
        if kind == 'int' and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == 'float' and isinstance(value, float):
            return value
        if kind == 'str' and isinstance(value, str):
            return value
        is_list = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
        if kind == 'str_list' and is_list and all(isinstance(v, str) for v in value):
            return tuple(value)
        if kind == 'float_list' and is_list and all(isinstance(v, float) for v in value):
            return tuple(float(v) for v in value)
        hint = ''
        if kind == 'float' and isinstance(value, int) and not isinstance(value, bool):
            hint = f' (write {value}.0: ROS 2 refuses an integer for a double parameter)'
        expected = {'str_list': 'a non-empty list of strings',
                    'float_list': 'a non-empty list of floats (e.g. [0.5, 0.25])'
                    }.get(kind, f'a {kind}')
        raise ConfigError(f'{self.name}: expected {expected}, got {value!r}{hint}')


PARAMETERS: tuple[ParamSpec, ...] = (
    # model and pruning
    ParamSpec('model', '', 'Qwen2.5-VL checkpoint directory or Hugging Face repo id '
              '(safetensors only; `fastdrivevla make-tiny-model DIR` writes a test model)'),
    ParamSpec('pruner', 'none', 'visual-token pruner name (`fastdrivevla plan --list-pruners`)',
              choices=_pruner_names),
    ParamSpec('pruner_weights', '', 'trained weights directory of a learned pruner (recon); '
              "'' = none"),
    ParamSpec('untrained', False, 'run a learned pruner (recon) without weights: random scores, '
              'for smoke tests and timing only (a learned pruner needs this or pruner_weights)'),
    ParamSpec('pruner_options', '', 'JSON object of pruner constructor options, e.g. '
              '\'{"layer": 3}\' (fastv) or \'{"important_ratio": 0.3}\' (vispruner); '
              "'' = defaults"),
    ParamSpec('pruning_ratio', 0.0, 'fraction of visual tokens pruned per view '
              '(K = floor(N * (1 - ratio)) kept; a pruner other than none needs it > 0 or '
              'view_ratios); changeable at runtime',
              low=0.0, high=0.99, runtime=True),
    ParamSpec('view_ratios', None, 'per-camera pruning ratios, in the order of `cameras` '
              '(Prune2Drive budgets from `fastdrivevla search-budgets`); unset = pruning_ratio '
              'for every camera', low=0.0, high=0.99, runtime=True, kind_='float_list'),
    ParamSpec('cameras', ('CAM_FRONT',), 'cameras fed to the model (and synchronised), '
              'nuScenes channel names; the first one stamps the plan (Impromptu-VLA is trained '
              'on CAM_FRONT only; multi-view models take all six)', problem=_cameras_problem),
    ParamSpec('max_pixels', 512 * 512, 'per-image pixel budget of the aspect-keeping shrink '
              "before the checkpoint processor's 28-px grid (Impromptu-VLA: 262144); wins over "
              'a narrower max_pixels in the checkpoint', low=3136, high=16777216),
    ParamSpec('image_width', 0, 'fixed resize width in px (0 = keep aspect within max_pixels; '
              '1596 with image_height 1596 gives 3,249 tokens)', low=0, high=4096),
    ParamSpec('image_height', 0, 'fixed resize height in px (0 = keep aspect)', low=0, high=4096),
    ParamSpec('device', 'auto', 'torch device: auto (cuda if available), cpu, cuda, cuda:N',
              problem=_device_problem),
    ParamSpec('dtype', 'auto', 'model dtype (auto = bfloat16 on CUDA, float32 on CPU)',
              choices=('auto', 'float32', 'bfloat16', 'float16')),
    ParamSpec('attn_implementation', 'sdpa', 'attention kernel of the model',
              choices=('sdpa', 'eager', 'flash_attention_2')),
    ParamSpec('constrained', True, 'grammar-constrained decoding: always a well-formed plan',
              runtime=True),
    ParamSpec('forced_tokens', True, 'with constrained decoding: feed what the reply format '
              'fixes (header, brackets, end) along with the free tokens instead of decoding it '
              'token by token', runtime=True),
    ParamSpec('decode_step', 'dynamic', 'decode pass: dynamic (growing KV cache), static '
              '(pre-allocated KV cache; every pass padded to one of a few lengths) or compiled '
              '(static + torch.compile; CUDA graphs on a GPU; the first plans compile)',
              choices=('dynamic', 'static', 'compiled')),
    ParamSpec('draft', 'none', 'speculative decoding of the waypoints (the reply stays exactly '
              'the same; only its cost changes): none, kinematic (constant speed and yaw rate '
              'from the ego history) or previous (the last plan of the stream moved to now; '
              'kinematic for the first plan); changeable at runtime',
              choices=('none', 'kinematic', 'previous'), runtime=True),
    ParamSpec('max_new_tokens', 320, 'decode budget per plan (tokens)', low=1, high=4096,
              runtime=True),
    ParamSpec('warmup', 1, 'plans on a blank camera set after loading, before the first real '
              'one (the node logs `model ready` after them): the first plan of a process pays '
              'one-off costs (grammar compilation, first allocations, compiling the decode '
              'step); 0 = none', low=0, high=100),
    # inputs
    ParamSpec('camera_namespace', 'cameras', 'camera topics are '
              'NAMESPACE/CAMERA/IMAGE_NAME[/compressed] (image_transport naming); relative '
              "names resolve in the node's namespace (__ns:=/car1 -> /car1/cameras/...)",
              problem=lambda v: _topic_problem(v) if v else None),
    ParamSpec('camera_image_name', 'image_rect', 'base image topic name under each camera',
              problem=_topic_problem),
    ParamSpec('image_transport', 'compressed', 'camera message type: compressed '
              '(sensor_msgs/CompressedImage on .../compressed) or raw (sensor_msgs/Image)',
              choices=('compressed', 'raw')),
    ParamSpec('odom_topic', 'ego/odometry', "nav_msgs/Odometry giving the prompt's past "
              "positions ('' = none: the prompt says standing still)",
              problem=lambda v: _topic_problem(v) if v else None),
    ParamSpec('ego_status_topic', 'ego/status', 'fastdrivevla_ros/EgoStatus giving speed, '
              "acceleration and steering for the prompt ('' = derive from odometry)",
              problem=lambda v: _topic_problem(v) if v else None),
    ParamSpec('ego_wait_s', 0.5, 'max wall-clock seconds a camera set waits for odometry (and '
              'ego status) at or after its stamp before planning, so its history is the one '
              '`fastdrivevla replay` prompts (0 = never wait)', low=0.0, high=10.0,
              runtime=True),
    ParamSpec('ego_frame', 'base_link', 'frame_id of the published plan (ego frame at the '
              'source frame time)', problem=lambda v: None if v else 'must not be empty'),
    ParamSpec('plan_frame', 'fastdrivevla_plan', 'child frame published as a static identity '
              'transform under ego_frame, so ego_frame exists in TF and RViz (fixed frame '
              "base_link) shows the plan even when nothing else publishes TF ('' = no TF)",
              problem=lambda v: _frame_problem(v) if v else None),
    ParamSpec('sync_slop_s', 0.06, 'ApproximateTimeSynchronizer slop: max stamp spread of one '
              'camera set (nuScenes cameras spread ~40 ms)', low=0.001, high=1.0),
    ParamSpec('sync_queue_size', 5, 'ApproximateTimeSynchronizer queue per camera (keep small: '
              'matching cost grows as queue^(cameras-1))', low=1, high=30),
    ParamSpec('max_staleness_s', 1.0, 'camera sets older than this (node clock minus stamp) '
              'when the worker is free are dropped and counted', low=0.01, high=3600.0,
              runtime=True),
    ParamSpec('camera_timeout_s', 1.0, 'a camera silent for this long is reported missing in '
              'diagnostics', low=0.05, high=60.0, runtime=True),
    ParamSpec('diagnostics_period_s', 1.0, 'period of /diagnostics reports', low=0.05,
              high=60.0),
    # outputs
    ParamSpec('publish_heatmaps', True, 'publish per-camera retained-token heatmaps and the '
              'mosaic (bgr8)', runtime=True),
    # testing
    ParamSpec('plan_delay_s', 0.0, 'extra wall-clock seconds slept before every plan: '
              'simulates a slow planner (lockstep replay tests); 0 in real use', low=0.0,
              high=600.0, runtime=True),
)
SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}

# what builds the planner (DrivingVLA.from_pretrained); the other parameters are the node's
MODEL_KEYS = ('model', 'device', 'dtype', 'attn_implementation')
PRUNER_KEYS = ('pruner', 'pruner_weights', 'untrained', 'pruner_options', 'pruning_ratio',
               'view_ratios')
INPUT_KEYS = ('cameras', 'max_pixels', 'image_width', 'image_height')
DECODE_KEYS = ('constrained', 'forced_tokens', 'decode_step', 'max_new_tokens', 'draft')
ENGINE_KEYS = MODEL_KEYS + PRUNER_KEYS + INPUT_KEYS + DECODE_KEYS


def check_setting(name: str, value: Any) -> Any:
    """`value` of setting `name` checked by its schema entry; Python ints pass for floats."""
    spec = SPECS[name]
    as_float = (lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
    if spec.kind == 'float':
        value = as_float(value)
    elif spec.kind == 'float_list' and isinstance(value, Sequence) and not isinstance(value, str):
        value = [as_float(v) for v in value]
    return spec.check(value)


def image_size(values: dict[str, Any]) -> tuple[int, int] | None:
    """Return the fixed (w, h) resize, or None to keep the aspect within max_pixels."""
    w, h = values.get('image_width') or 0, values.get('image_height') or 0
    return (int(w), int(h)) if w and h else None


def resolve_device(device: str) -> str:
    """Map 'auto' to 'cuda' when torch sees a GPU, else 'cpu'."""
    if device != 'auto':
        return device
    import torch

    return 'cuda' if torch.cuda.is_available() else 'cpu'


def resolve_dtype(dtype: str, device: str) -> str:
    """Map 'auto' to bfloat16 on CUDA, float32 elsewhere."""
    if dtype != 'auto':
        return dtype
    return 'bfloat16' if device.startswith('cuda') else 'float32'


def pruner_options_of(values: dict[str, Any]) -> dict[str, Any]:
    """Return the pruner's checked constructor options (weights / untrained included)."""
    from fastdrivevla_ros.pruning.registry import pruner_options

    return pruner_options(values['pruner'], values['pruner_options'],
                          values['pruner_weights'], values['untrained'])


def engine_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of DrivingVLA.from_pretrained (device and dtype resolved)."""
    device = resolve_device(values['device'])
    return {'dtype': resolve_dtype(values['dtype'], device), 'device': device,
            'attn_implementation': values['attn_implementation'], 'pruner': values['pruner'],
            'pruner_options': pruner_options_of(values), 'cameras': tuple(values['cameras']),
            'max_pixels': values['max_pixels'], 'image_size': image_size(values),
            'pruning_ratio': values['pruning_ratio'], 'view_ratios': values['view_ratios'],
            'max_new_tokens': values['max_new_tokens'], 'constrained': values['constrained'],
            'forced_tokens': values['forced_tokens'], 'decode_step': values['decode_step'],
            'draft': values['draft']}


def settings_problems(values: dict[str, Any]) -> list[str]:
    """Problems between checked values that no single parameter shows (empty: fine)."""
    problems = []
    try:
        pruner_options_of(values)
    except ConfigError as e:
        problems.append(f'pruner: {e}')
    ratios = values['view_ratios']
    if ratios is not None and len(ratios) != len(values['cameras']):
        problems.append(f'view_ratios: {len(ratios)} ratios for {len(values["cameras"])} '
                        'cameras (one per camera, in the order of `cameras`)')
    w, h = values['image_width'], values['image_height']
    if (w == 0) != (h == 0) or (w and min(w, h) < 28):
        problems.append(f'image_width/image_height: both 0 (keep aspect) or both >= 28, '
                        f'got {w}x{h}')
    return problems


def check_values(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """
    Return (every parameter: its checked value or default, problems found).

    Unknown names are problems too (with the closest known name), so a typo in a YAML is
    reported, never silently ignored.
    """
    problems, out = [], {}
    for name in values:
        if name not in SPECS and name not in ROS_BUILTIN_PARAMETERS:
            problems.append(unknown_parameter(name))
    for spec in PARAMETERS:
        try:
            out[spec.name] = spec.check(values.get(spec.name, spec.default))
        except ConfigError as e:
            problems.append(str(e))
    return out, problems or settings_problems(out)


def unknown_parameter(name: str) -> str:
    """Say that `name` is not a parameter, with the closest one that is."""
    close = difflib.get_close_matches(name, list(SPECS), n=1)
    hint = f'; did you mean {close[0]!r}?' if close else ''
    return f'unknown parameter {name!r}{hint}'


def load_parameter_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """
    Read a ROS 2 parameter YAML (`/**:` or `NODE:` -> `ros__parameters:`) for `node_name`.

    Returns the raw values (check them with check_values); raises ConfigError on a file that
    ROS would not accept as a parameter file for this node.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f'{path}: cannot read parameter file ({e.strerror or e})') from e
    except yaml.YAMLError as e:      # one line, naming the file and the place
        mark = getattr(e, 'problem_mark', None)
        where = f':{mark.line + 1}:{mark.column + 1}' if mark else ''
        what = ' '.join(str(getattr(e, 'problem', None) or e).split())
        raise ConfigError(f'{path}{where}: not valid YAML ({what})') from e
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping of node names to ros__parameters')
    values: dict[str, Any] = {}
    for key in ('/**', node_name, f'/{node_name}'):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'), dict):
            raise ConfigError(f"{path}: '{key}' must contain a 'ros__parameters' mapping")
        values.update(section['ros__parameters'])
    if not values:
        raise ConfigError(f"{path}: no '/**' or '{node_name}' section with ros__parameters")
    return values
