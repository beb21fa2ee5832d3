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
ament_pep257 docstring style on ROS-facing code.

Under ROS 2 the test runs ament_pep257 itself. Elsewhere it runs pydocstyle with the checks
ament_pep257 selects on Humble and Jazzy (all but AMENT_IGNORE, so D213 applies: a multi-line
docstring's summary starts on its second line), so a violation fails before it reaches ROS.
"""

from pathlib import Path

from ament_lint_paths import linted_paths
import pytest

AMENT_IGNORE = ['D100', 'D101', 'D102', 'D103', 'D104', 'D105', 'D106', 'D107', 'D203',
                'D212', 'D404']


def python_files(paths: list[str]) -> list[str]:
    out = []
    for path in map(Path, paths):
        out += sorted(str(p) for p in path.rglob('*.py')) if path.is_dir() else [str(path)]
    return out


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    try:
        from ament_pep257.main import main
    except ImportError:
        main = None
    if main is not None:
        assert main(argv=linted_paths()) == 0, 'Found code style errors / warnings'
        return
    pydocstyle = pytest.importorskip('pydocstyle', reason='neither ament_pep257 nor '
                                     'pydocstyle is installed')
    errors = [str(e) for e in pydocstyle.check(python_files(linted_paths()),
                                               ignore=AMENT_IGNORE)]
    assert not errors, '\n'.join(errors)
