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
The planning step the drive node's worker thread runs, ROS-free.

PlannerService owns the DrivingVLA: it loads it (tracking 'loading' / 'ready' / 'failed'),
applies runtime parameter changes between frames (never during one), checks a FrameSet's images
(compressed ones reach the engine as bytes, decoded at the scale the model needs), plans,
renders the retained-token heatmaps, and turns every per-frame fault (bad image, parse failure,
CUDA out of memory, anything else) into a diagnostics entry instead of an exception, so one bad
frame never stops the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import threading
import time
from typing import Any, Callable

from fastdrivevla_ros.errors import FastDriveError, InputError
from fastdrivevla_ros.pipeline.diagnostics import DriveDiagnostics
from fastdrivevla_ros.pipeline.images import decode_compressed, EngineImage, image_decoder
from fastdrivevla_ros.pipeline.log import Log
from fastdrivevla_ros.pipeline.params import NodeConfig
from fastdrivevla_ros.pipeline.worker import FrameSet
from fastdrivevla_ros.vla.draft import PreviousPlan
from fastdrivevla_ros.vla.prompt import EgoHistory
from fastdrivevla_ros.vla.result import PlanResult
from fastdrivevla_ros.vla.settings import ENGINE_KEYS, PARAMETERS
import numpy as np

# runtime parameters that DrivingVLA.configure applies (the schema's runtime planner settings)
ENGINE_RUNTIME = tuple(p.name for p in PARAMETERS if p.runtime and p.name in ENGINE_KEYS)


@dataclass
class PlanOutput:
    """One plan ready to publish. heatmaps: camera -> [h, w, 3] RGB overlay; mosaic: 2x3 RGB."""

    result: PlanResult
    stamp_ns: int
    camera_stamps_ns: dict[str, int]
    latency_ms: float
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    mosaic: np.ndarray | None = None


def build_engine(config: NodeConfig, log: Log):
    """Load the DrivingVLA the parameters describe (slow: reads the checkpoint)."""
    from fastdrivevla_ros.vla.engine import DrivingVLA

    if config.untrained:
        log('warn', f'pruner {config.pruner!r} runs UNTRAINED (random scores): for smoke tests '
                    'and timing, not for driving; set pruner_weights for a trained one')
    return DrivingVLA.from_pretrained(config.model, **config.engine_kwargs())


def _is_cuda_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or \
        'CUDA out of memory' in str(error)


def _undecodable(images: dict[str, EngineImage]) -> tuple[str, InputError] | None:
    """
    Return the first camera whose compressed bytes do not decode, with decode_compressed's error.

    Only their headers were checked before the engine decoded them; when the engine refuses a
    frame, this full decode (rare, so its cost does not matter) names the camera to report.
    """
    for camera, image in images.items():
        if isinstance(image, bytes):
            try:
                decode_compressed(image, camera=camera)
            except InputError as e:
                return camera, e
    return None


class PlannerService:
    """
    Engine owner for the worker thread.

    clock: seconds on the same time base as frame stamps (the node's ROS clock);
    history: stamp (s) -> EgoHistory or None (standing start);
    pose: stamp (s) -> the ego's odometry PoseSample or None (for draft `previous`: the
    service keeps the stream's last plan);
    decode: (camera, payload) -> the engine's image, raising InputError on a bad image
    (default: image_decoder(), the node's without cv_bridge);
    engine_factory: (config, log) -> engine (default: build_engine).
    """

    def __init__(self, config: NodeConfig, diagnostics: DriveDiagnostics, *,
                 clock: Callable[[], float] = time.time,
                 history: Callable[[float], EgoHistory | None] = lambda stamp: None,
                 pose: Callable[[float], Any] = lambda stamp: None,
                 decode: Callable[[str, Any], EngineImage] | None = None,
                 engine_factory: Callable[[NodeConfig, Log], Any] = build_engine,
                 log: Log = lambda level, message: None):
        self.config, self.diagnostics = config, diagnostics
        self.clock, self.history, self.log = clock, history, log
        self.pose, self.previous = pose, PreviousPlan()
        self.decode = decode or image_decoder()
        self.engine_factory = engine_factory
        self.engine = None
        self.state = 'loading'
        self.warmup_s: float | None = None     # seconds the warm-up plans took
        self._pending: NodeConfig | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ model
    def load(self) -> bool:
        """Load the model; on failure log it, report 'failed' and keep the node alive."""
        self.diagnostics.model_state('loading', self.config.model)
        try:
            engine = self.engine_factory(self.config, self.log)
            self.diagnostics.model_state('warming up', f'{self.config.warmup} blank plan(s)')
            self.warmup_s = engine.warmup(self.config.warmup)
            self.engine = engine
        except Exception as e:  # noqa: B902 - any load failure is reported, not raised
            self.state = 'failed'
            reason = f'{type(e).__name__}: {e}'
            if _is_cuda_oom(e):
                reason = f'CUDA out of memory while loading ({e}); try dtype bfloat16 or ' \
                         'a smaller model'
            self.diagnostics.model_state('failed', reason)
            self.log('error', f'model load failed: {reason}')
            return False
        self.state = 'ready'
        self._report_ready()
        self.log('info', f'model ready: {self.config.model} ({self.engine.device}; warm-up '
                         f'{self.config.warmup} plan(s) in {self.warmup_s:.2f} s)')
        return True

    def _report_ready(self) -> None:
        self.diagnostics.model_state('ready', f'{self.config.model} on {self.engine.device}, '
                                     f'pruner {self.engine.pruner.name} @ '
                                     f'{self.engine.settings.pruning_ratio:.2f}',
                                     warmup_s=self.warmup_s)

    def update_config(self, config: NodeConfig) -> None:
        """Queue validated runtime changes; applied before the next frame is planned."""
        with self._lock:
            self._pending = config

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        changes = {k: getattr(pending, k) for k in ENGINE_RUNTIME
                   if getattr(pending, k) != getattr(self.config, k)}
        self.config = pending
        if changes and self.engine is not None:
            self.engine.configure(**changes)
            self._report_ready()
            self.log('info', f'applied {changes}')

    # ------------------------------------------------------------------ one frame
    def plan(self, frame: FrameSet) -> PlanOutput | None:
        """Plan one camera set; None (with diagnostics and a log line) when it cannot."""
        self._apply_pending()
        if self.config.plan_delay_s:       # a slow planner on demand (lockstep replay tests)
            time.sleep(self.config.plan_delay_s)
        now = self.clock()
        if self.engine is None:
            self.diagnostics.fault('model_unavailable', f'model {self.state}', now)
            return None
        images = {}
        for camera in self.config.cameras:
            try:
                images[camera] = self.decode(camera, frame.images[camera])
            except (InputError, KeyError) as e:
                message = str(e) if isinstance(e, InputError) else f'{camera}: missing in set'
                self._drop(message, now, camera)
                return None
        try:
            result = self._plan(images, frame.stamp)
        except Exception as e:  # noqa: B902 - one bad frame must not stop the node
            self._engine_fault(e, images)
            return None
        return self._output(frame, result)

    def _plan(self, images: dict, stamp: float) -> PlanResult:
        """Plan with the engine; with draft `previous`, draft from this stream's last plan."""
        sample = self.pose(stamp)
        pose = None if sample is None else (sample.x, sample.y, sample.yaw)
        draft = self.previous.draft(pose, stamp) if self.config.draft == 'previous' else None
        result = self.engine.plan(images, self.history(stamp), draft=draft)
        self.previous.remember(result.waypoints if result.ok else None, pose, stamp)
        return result

    def _drop(self, message: str, now: float, camera: str | None = None) -> None:
        self.diagnostics.fault('input_errors', message, now, camera=camera)
        self.log('warn', f'frame dropped: {message}')

    def _engine_fault(self, error: Exception, images: dict[str, EngineImage]) -> None:
        now = self.clock()
        if _is_cuda_oom(error):
            import torch

            torch.cuda.empty_cache()
            self.diagnostics.fault('cuda_oom', str(error).splitlines()[0], now)
            self.log('error', 'CUDA out of memory; frame dropped (lower max_pixels or raise '
                     'pruning_ratio)')
        elif isinstance(error, InputError):
            camera, error = _undecodable(images) or (None, error)
            self._drop(str(error), now, camera)
        else:
            kind = '' if isinstance(error, FastDriveError) else f'{type(error).__name__}: '
            self.diagnostics.fault('errors', f'{kind}{error}', now)
            self.log('error', f'planning failed: {kind}{error}')

    def _output(self, frame: FrameSet, result: PlanResult) -> PlanOutput:
        heatmaps, mosaic_rgb = {}, None
        if self.config.publish_heatmaps:
            from fastdrivevla_ros.viz.heatmap import mosaic, token_overlay

            heatmaps = {v.camera: token_overlay(v) for v in result.views}
            mosaic_rgb = mosaic(result.views)
        stamps = dict(frame.stamps_ns)
        reference = stamps.get(self.config.cameras[0], int(round(frame.stamp * 1e9)))
        now = self.clock()
        latency_ms = (now - frame.stamp) * 1e3
        self.diagnostics.plan_done(now, result.status, latency_ms,
                                   result.timings_ms.get('total', 0.0), {
                                       'status': result.status, 'pruner': result.pruner,
                                       'pruning_ratio': f'{result.pruning_ratio:.2f}',
                                       'tokens': f'{result.tokens_kept}/{result.tokens_total}',
                                       'num_generated': str(result.num_generated),
                                       'decode_passes': str(result.decode_passes),
                                       'draft_tokens': str(result.draft_tokens),
                                       'accepted_tokens': str(result.accepted_tokens)})
        if not result.ok:
            self.log('warn', f'plan parse failed: {result.reason}')
        return PlanOutput(result, reference, stamps, latency_ms, heatmaps, mosaic_rgb)
