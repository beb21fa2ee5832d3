#!/usr/bin/env bash
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

# The ROS 2 tests, for real (`make test` runs this after the ROS-free suite):
#   colcon build --cmake-args -DBUILD_TESTING=ON of this package in a temporary workspace,
#   colcon test (launch tests and ament linters), and a failure if `colcon test-result` shows
#   any failure or if a launch test (test/test_ros_*.py) did not run.
#
# Which ROS 2, first found:
#   1. one already sourced (ROS_DISTRO set and colcon on PATH);
#   2. /opt/ros/<distro>, with the project's venv activated over it;
#   3. the bundled Jazzy ../shared/ros2-jazzy/install.sh, installed (about 20 s the first
#      time, under 1 s after) into ROS_PREFIX (default: .ros2-jazzy beside VENV, so each venv
#      has its own and no other checkout's install is rewritten) with the project's venv.
# None: one line saying how to enable the ROS tests, exit 0; under CI=true, exit 1.
#
# Usage: test/ros_tests.sh [VENV]      (VENV defaults to .venv; make test passes its own)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "${1:-$REPO/.venv}" && pwd)
BUNDLED="$REPO/../shared/ros2-jazzy/install.sh"
ROS_PREFIX=${ROS_PREFIX:-$(dirname "$VENV")/.ros2-jazzy}   # install.sh refuses one inside VENV

say() { echo "ros_tests: $*"; }

activate_venv() {
  export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
}

find_ros() {
  if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null; then
    activate_venv
    say "using the sourced ROS 2 $ROS_DISTRO with $VENV"
    return 0
  fi
  local setup
  for setup in /opt/ros/*/setup.bash; do
    if [[ -f "$setup" ]]; then
      set +u; . "$setup"; set -u
      activate_venv
      command -v colcon >/dev/null || "$VENV/bin/python" -m pip install -q \
        colcon-common-extensions || exit 1
      say "using $(dirname "$setup") with $VENV"
      return 0
    fi
  done
  if [[ -f "$BUNDLED" ]]; then
    local keep=()      # install.sh without --with-rviz would remove an RViz installed there
    [[ -x "$ROS_PREFIX/bin/rviz2" ]] && keep=(--with-rviz)
    # set -e does not apply in a function called from `if !`: check each step
    bash "$BUNDLED" "$ROS_PREFIX" "$VENV" "${keep[@]}" || { say "installing $BUNDLED failed" >&2
                                                          exit 1; }
    . "$ROS_PREFIX/env.sh" || exit 1
    return 0
  fi
  return 1
}

if ! find_ros; then
  how="no ROS 2 found (source a ROS 2 setup.bash, or install one in /opt/ros, or put"
  how+=" the bundled ros2-jazzy/ at ../shared beside this checkout)"
  if [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; then
    say "ROS 2 tests cannot run: $how [CI=true: a missing ROS 2 fails the run]" >&2
    exit 1
  fi
  say "ROS 2 tests skipped: $how"
  exit 0
fi

WS=$(mktemp -d "${TMPDIR:-/tmp}/fastdrivevla-ros-ws.XXXXXX")
trap 'rm -rf "$WS"' EXIT
mkdir "$WS/src"
ln -s "$REPO" "$WS/src/fastdrivevla_ros"
cd "$WS"

say "colcon build in $WS"
colcon build --merge-install --event-handlers console_cohesion- status- \
  --cmake-args -DBUILD_TESTING=ON >"$WS/build.txt" 2>&1 || {
  cat "$WS/build.txt"; say "colcon build failed" >&2; exit 1; }
set +u; . install/setup.bash; set -u      # colcon's setup scripts are not set -u safe

say "colcon test (launch tests + ament linters)"
colcon test --merge-install --packages-select fastdrivevla_ros || true   # results decide
RESULTS=build/fastdrivevla_ros/test_results/fastdrivevla_ros
colcon test-result --test-result-base "$RESULTS" --all --verbose || {
  say "colcon test failed (the failures are above)" >&2; exit 1; }

# every launch test module ran all its tests: none skipped (e.g. rclpy or the messages missing)
python3 - "$RESULTS" "$REPO/test" <<'EOF'
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

results, tests = map(pathlib.Path, sys.argv[1:])
for module in sorted(p.stem for p in tests.glob('test_ros_*.py')):
    report = results / f'{module}.xunit.xml'
    if not report.is_file():
        sys.exit(f'ros_tests: launch test {module} did not run (no {report.name})')
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    ran, skipped = int(suite.get('tests')), int(suite.get('skipped'))
    if ran == 0 or skipped:
        sys.exit(f'ros_tests: launch test {module}: {ran} tests, {skipped} skipped')
    print(f'ros_tests: launch test {module}: {ran} tests ran')
EOF
