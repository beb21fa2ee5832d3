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
Route the pipeline's `log(level, message)` calls to a ROS logger.

rclpy's RcutilsLogger remembers the severity of every call site (file, line, bytecode offset)
and raises "Logger severity cannot be changed between calls" when one site logs another
severity. So each severity below is its own call site: never dispatch through one shared line
such as `{'info': logger.info, ...}[level](message)`.
"""

from __future__ import annotations

from typing import Any, Callable

Log = Callable[[str, str], None]     # (level 'info'|'warn'|'error', message)
LEVELS = ('info', 'warn', 'error')


def leveled_log(logger: Any) -> Log:
    """Return log(level, message) for `logger` (an rclpy RcutilsLogger or alike)."""

    def log(level: str, message: str) -> None:
        if level == 'info':
            logger.info(message)
        elif level == 'warn':
            logger.warning(message)
        elif level == 'error':
            logger.error(message)
        else:
            raise ValueError(f'log level {level!r} is not one of {LEVELS}')

    return log
