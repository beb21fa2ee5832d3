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
The drive node's log adapter keeps one severity per call site, as rclpy demands.

rclpy's RcutilsLogger keys a context by the calling frame (file, line, bytecode offset) and
raises ValueError('Logger severity cannot be changed between calls.') when that site logs
another severity. The double below enforces the same rule, so a dispatching adapter fails here
without ROS; before the fix one info then one warning stopped the node's planning for good.
"""

import io
import sys
from types import SimpleNamespace

from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
from fastdrivevla_ros.pipeline.log import leveled_log
from fastdrivevla_ros.pipeline.params import check_update, validate_config
from fastdrivevla_ros.pipeline.planner import PlannerService
from fastdrivevla_ros.pipeline.worker import FrameSet
import numpy as np
from PIL import Image
import pytest

SEVERITY = {'info': 'INFO', 'warn': 'WARN', 'error': 'ERROR'}


class CallSiteLogger:
    """A logger double with rclpy's rule: one severity per call site."""

    def __init__(self):
        self.severity_of_site = {}
        self.lines = []

    def _log(self, severity: str, message: str) -> None:
        caller = sys._getframe(2)       # the frame that called info()/warning()/error()
        site = (caller.f_code.co_filename, caller.f_lineno, caller.f_lasti)
        if self.severity_of_site.setdefault(site, severity) != severity:
            raise ValueError('Logger severity cannot be changed between calls.')
        self.lines.append((severity, message))

    def info(self, message, **kwargs):
        self._log('INFO', message)

    def warning(self, message, **kwargs):
        self._log('WARN', message)

    def error(self, message, **kwargs):
        self._log('ERROR', message)


def test_the_double_refuses_a_call_site_that_changes_severity():
    logger = CallSiteLogger()
    with pytest.raises(ValueError, match='severity cannot be changed'):
        for method in (logger.info, logger.warning):
            method('one call site, two severities')
    assert logger.lines == [('INFO', 'one call site, two severities')]


def test_info_warning_error_in_any_order_all_reach_the_logger():
    logger = CallSiteLogger()
    log = leveled_log(logger)
    sequence = [('info', 'model ready'), ('warn', 'frame dropped'), ('info', 'applied'),
                ('error', 'planning failed'), ('warn', 'frame dropped'), ('info', 'applied')]
    for level, message in sequence:
        log(level, message)
    assert logger.lines == [(SEVERITY[level], m) for level, m in sequence]
    with pytest.raises(ValueError, match='not one of'):
        log('debug', 'unknown level')


def jpeg_message(seed: int, data: bytes = b''):
    """Build a CompressedImage-shaped message of a 320x180 JPEG (or of `data` if given)."""
    if not data:
        rng = np.random.default_rng(seed)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)).save(buf, 'JPEG')
        data = buf.getvalue()
    return SimpleNamespace(format='jpeg', data=data)


def test_planner_keeps_planning_after_a_warning_then_an_info(tiny_model_dir):
    """The node's sequence: 'model ready' (info), a dropped frame (warn), 'applied' (info)."""
    config = validate_config({'model': str(tiny_model_dir), 'cameras': ['CAM_FRONT'],
                              'device': 'cpu', 'max_pixels': 112 * 112, 'max_new_tokens': 2,
                              'constrained': False, 'pruner': 'random',
                              'publish_heatmaps': False})
    logger = CallSiteLogger()
    service = PlannerService(config, DriveDiagnostics(config.cameras),
                             clock=lambda: 0.0, log=leveled_log(logger))
    assert service.load()

    def frame(message):
        return FrameSet(stamp=0.0, images={'CAM_FRONT': message}, stamps_ns={'CAM_FRONT': 0})

    assert service.plan(frame(jpeg_message(0, data=b'not a jpeg'))) is None     # warn
    service.update_config(check_update(service.config, {'pruning_ratio': 0.75}))
    out = service.plan(frame(jpeg_message(1)))                                  # info, plan
    assert out is not None and out.result.pruning_ratio == 0.75
    assert service.plan(frame(jpeg_message(2))) is not None
    severities = [severity for severity, _ in logger.lines]
    assert severities[:3] == ['INFO', 'WARN', 'INFO'], logger.lines
    assert 'model ready' in logger.lines[0][1] and 'applied' in logger.lines[2][1]
