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

"""The QoS profiles of our publishers and subscriptions, in one place."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def reliable(depth: int, latched: bool = False) -> QoSProfile:
    """
    Keep-last RELIABLE QoS.

    RELIABLE so RViz and test subscribers (reliable by default) connect; `latched`
    (TRANSIENT_LOCAL) so a subscriber that joins late still gets the last message.
    """
    durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=durability)


# replay/finished is latched: an evaluator that subscribes late still hears the replay is over
FINISHED_QOS = reliable(1, latched=True)
