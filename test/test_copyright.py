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

"""ament_copyright: every ROS-facing source file carries the Apache-2.0 header."""

from ament_lint_paths import linted_paths
import pytest

main = pytest.importorskip('ament_copyright.main',
                           reason='ament_copyright is not installed (ROS 2 only)').main


@pytest.mark.copyright
@pytest.mark.linter
def test_copyright():
    assert main(argv=linted_paths()) == 0, 'Found errors'
