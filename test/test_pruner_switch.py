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
One explicit pruner switch for `fastdrivevla plan` and the drive node, on the tiny model.

`pruner:=recon` without weights used to pass validation and then fail model loading in the
node; the node could not pass any other pruner option either (FastV layer, VisPruner split).
"""

import json

from fastdrivevla_ros.cli import main
from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
from fastdrivevla_ros.pipeline.params import validate_config
from fastdrivevla_ros.pipeline.planner import PlannerService
from PIL import Image


def node_config(model, **params):
    return validate_config({'model': str(model), 'cameras': ['CAM_FRONT'], 'device': 'cpu',
                            'max_pixels': 112 * 112, 'max_new_tokens': 2,
                            'constrained': False} | params)


def test_node_loads_recon_untrained_and_warns(tiny_model_dir):
    logs = []
    service = PlannerService(node_config(tiny_model_dir, pruner='recon', untrained=True),
                             DriveDiagnostics(['CAM_FRONT']),
                             log=lambda level, message: logs.append((level, message)))
    assert service.load(), logs
    assert service.engine.pruner.name == 'recon' and service.engine.pruner.weights is None
    assert any(level == 'warn' and 'UNTRAINED' in message for level, message in logs)


def test_node_passes_the_fastv_layer_to_the_pruner(tiny_model_dir):
    service = PlannerService(node_config(tiny_model_dir, pruner='fastv',
                                         pruner_options='{"layer": 1}'),
                             DriveDiagnostics(['CAM_FRONT']))
    assert service.load()
    assert service.engine.pruner.layers == (1,)


def test_plan_command_takes_the_same_switch(tiny_model_dir, tmp_path, camera_images, capsys):
    path = tmp_path / 'front.png'
    Image.fromarray(camera_images['CAM_FRONT']).save(path)
    common = ['plan', '--model', str(tiny_model_dir), '--image', f'CAM_FRONT={path}',
              '--max-pixels', str(112 * 112), '--pruning-ratio', '0.5', '--no-constrained']
    assert main(common + ['--pruner', 'recon']) == 2
    assert "pruner 'recon' is learned" in capsys.readouterr().err
    main(common + ['--pruner', 'recon', '--untrained'])
    out = capsys.readouterr()
    assert json.loads(out.out)['pruner'] == 'recon' and 'UNTRAINED' in out.err
    assert main(common + ['--pruner', 'vispruner', '--pruner-options', '{"importnt": 1}']) == 2
    assert 'it takes: important_ratio' in capsys.readouterr().err
