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

"""Run one node until shutdown: the start-up check, spin and tear-down both nodes share."""

from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node


def run_node(name: str, make_node: Callable[[], Node], config_errors: tuple,
             make_executor: Callable[[], Executor],
             spin: Callable[[Executor, Node], None], close: Callable[[Node], None]) -> int:
    """
    Build the node, spin it, close it; return the process exit code.

    A configuration error (one of `config_errors`) while building is logged as fatal and
    returns 2 without spinning; one raised while spinning (a callback found the configuration
    unusable) ends the spin, is logged as fatal and returns 2. Ctrl-C and an external shutdown
    end the spin quietly; `close` always runs before the node and rclpy are shut down. rclpy
    must be initialised.
    """
    try:
        node = make_node()
    except config_errors as e:
        get_logger(name).fatal(f'bad configuration, not starting:\n{e}')
        rclpy.try_shutdown()
        return 2
    executor = make_executor()
    executor.add_node(node)
    code = 0
    try:
        spin(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except config_errors as e:
        get_logger(name).fatal(f'bad configuration, stopping:\n{e}')
        code = 2
    finally:
        close(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code
