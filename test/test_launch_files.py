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
Launch files, RViz layout, package.xml and CMakeLists.txt checked without ROS.

Each test would fail on a real packaging mistake: a launch argument the node does not have, an
executable that is not installed, an RViz topic nobody publishes, a message dependency missing
from package.xml or CMake, a readiness string the replay launch waits for but the node never
logs.
"""

import ast
from pathlib import Path
import re
import sys
import xml.etree.ElementTree as ElementTree

from fastdrivevla_ros.data import topics
from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pipeline.params import (
    launch_value, load_parameter_file, NodeConfig, SPECS)
from fastdrivevla_ros.vla.prompt import CAMERAS
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
ROS_CODE = sorted((REPO / 'fastdrivevla_ros' / 'ros').glob('*.py')) + LAUNCH_FILES


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def string_calls(tree: ast.AST, func: str) -> list[ast.Call]:
    """Return calls to `func` (a name or attribute) anywhere in `tree`."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, 'attr', None) or getattr(node.func, 'id', None)
            if name == func:
                calls.append(node)
    return calls


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


@pytest.fixture(scope='module')
def package_xml():
    return ElementTree.parse(REPO / 'package.xml').getroot()


@pytest.fixture(scope='module')
def cmake():
    return (REPO / 'CMakeLists.txt').read_text()


def test_launch_files_define_generate_launch_description():
    assert {p.name for p in LAUNCH_FILES} == {'drive.launch.py', 'replay.launch.py'}
    for path in LAUNCH_FILES:
        names = {n.name for n in parse(path).body if isinstance(n, ast.FunctionDef)}
        assert 'generate_launch_description' in names, path


def node_arguments() -> tuple:
    """Return NODE_ARGUMENTS of ros/launch_helpers.py (parameter names)."""
    tree = parse(REPO / 'fastdrivevla_ros' / 'ros' / 'launch_helpers.py')
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == 'NODE_ARGUMENTS':
            return ast.literal_eval(node.value)
    raise AssertionError('NODE_ARGUMENTS not found')


def test_launch_arguments_are_node_parameters_settable_from_text():
    arguments = node_arguments()
    assert {'model', 'pruner', 'pruner_weights', 'pruning_ratio', 'camera_namespace',
            'use_sim_time'} <= set(arguments)
    for name in arguments:
        assert name == 'use_sim_time' or SPECS[name].kind in ('str', 'float', 'int', 'bool')
    assert launch_value('pruning_ratio', '0') == 0.0 and launch_value('use_sim_time', 'True')
    assert launch_value('camera_namespace', '/car1/cameras') == '/car1/cameras'
    with pytest.raises(ConfigError, match='pruning_ratio:=.abc. is not a number'):
        launch_value('pruning_ratio', 'abc')
    with pytest.raises(ConfigError, match='outside'):
        launch_value('pruning_ratio', '1')


def test_every_executable_launched_is_installed_and_has_a_main(cmake):
    executables = set()
    for path in LAUNCH_FILES + [REPO / 'fastdrivevla_ros' / 'ros' / 'launch_helpers.py']:
        for call in string_calls(parse(path), 'Node'):
            package, exe = keyword(call, 'package'), keyword(call, 'executable')
            if isinstance(package, ast.Name) or getattr(package, 'value', '') == \
                    'fastdrivevla_ros':
                executables.add(exe.value)
    assert executables == {'drive_node', 'replay_evaluator', 'replay_lockstep'}
    for exe in executables:
        script = REPO / 'scripts' / exe
        assert script.is_file() and script.stat().st_mode & 0o111, f'{script} not executable'
        assert f'scripts/{exe}' in cmake, f'{exe} not installed by CMakeLists.txt'
        module = re.search(r'from (fastdrivevla_ros\.ros\.\w+) import main', script.read_text())
        source = REPO / (module.group(1).replace('.', '/') + '.py')
        assert 'main' in {n.name for n in parse(source).body if isinstance(n, ast.FunctionDef)}


def test_replay_launch_waits_for_strings_the_planner_actually_logs():
    replay = (REPO / 'launch' / 'replay.launch.py').read_text()
    ready, failed = re.search(r"READY, FAILED = b'([^']+)', b'([^']+)'", replay).groups()
    planner = (REPO / 'fastdrivevla_ros' / 'pipeline' / 'planner.py').read_text()
    assert f"'{ready}: " in planner and f"'{failed}: " in planner
    assert "'--clock'" in replay and "'bag', 'play'" in replay


def published_topics() -> dict[str, str]:
    """Return {topic: message class} the drive node creates publishers for."""
    tree = parse(REPO / 'fastdrivevla_ros' / 'ros' / 'drive_node.py')
    out = {}
    for call in string_calls(tree, 'create_publisher'):
        msg_type, topic = call.args[0].id, call.args[1]
        if isinstance(topic, ast.JoinedStr):      # planner/heatmap/{cam}
            for cam in CAMERAS:
                out[f'/planner/heatmap/{cam}'] = msg_type
        else:
            out['/' + topic.value.lstrip('/')] = msg_type
    return out


def test_rviz_layout_shows_what_the_node_publishes_in_its_frame():
    config = yaml.safe_load((REPO / 'rviz' / 'drive.rviz').read_text())
    manager = config['Visualization Manager']
    drive = load_parameter_file(REPO / 'config' / 'drive.yaml')
    assert manager['Global Options']['Fixed Frame'] == drive['ego_frame']
    # nothing else publishes TF live: the node's static ego_frame -> plan_frame makes the fixed
    # frame exist (RViz: "Fixed Frame [base_link] does not exist" otherwise)
    assert drive['plan_frame'] and drive['plan_frame'] != drive['ego_frame']
    node = (REPO / 'fastdrivevla_ros' / 'ros' / 'drive_node.py').read_text()
    assert 'StaticTransformBroadcaster(self)' in node
    assert 'static_transform_fields(self.config.ego_frame, self.config.plan_frame' in node
    published = published_topics()
    wanted = {'rviz_default_plugins/Image': 'Image', 'rviz_default_plugins/Path': 'Path',
              'rviz_default_plugins/MarkerArray': 'MarkerArray'}
    shown = {}
    for display in manager['Displays']:
        if display['Class'] in wanted:
            topic = display['Topic']
            assert topic['Reliability Policy'] == 'Reliable'   # the node publishes reliably
            assert published.get(topic['Value']) == wanted[display['Class']], topic['Value']
            shown[topic['Value']] = display['Enabled']
    heatmaps = {f'/planner/heatmap/{cam}' for cam in CAMERAS}
    assert heatmaps | {'/planner/heatmap/mosaic', '/planner/path', '/planner/markers'} <= \
        set(shown)
    # what the product is about is on by default; the per-camera heatmaps are optional tabs
    assert all(on for topic, on in shown.items() if topic not in heatmaps)
    view = manager['Views']['Current']
    assert view['Class'] == 'rviz_default_plugins/TopDownOrtho'
    assert view['Angle'] == pytest.approx(-1.5708, abs=1e-3), 'ego forward (+x) must point up'


def test_rviz_layout_docks_the_mosaic_large_with_the_heatmaps_as_tabs():
    """The saved dock layout (Qt's QMainWindow state) places every image panel by name."""
    config = yaml.safe_load((REPO / 'rviz' / 'drive.rviz').read_text())
    geometry = config['Window Geometry']
    state = bytes.fromhex(geometry['QMainWindow State'])
    names = ['Token mosaic'] + [f'Heatmap {cam}' for cam in
                                ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT',
                                 'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT')]
    shown = [d['Name'] for d in config['Visualization Manager']['Displays']
             if d['Class'] == 'rviz_default_plugins/Image']
    assert sorted(shown) == sorted(names)
    # Qt stores object names as UTF-16BE, in dock order: the mosaic first, then the cameras
    offsets = [state.find(name.encode('utf-16-be')) for name in names]
    assert -1 not in offsets, 'a panel without a saved place lands in the left dock at ~50 px'
    assert offsets == sorted(offsets), 'tab order differs from the mosaic order'
    assert (geometry['Width'], geometry['Height']) == (1600, 1000)


def test_package_xml_is_format_3_ament_cmake_interface_package(package_xml):
    assert package_xml.get('format') == '3'
    assert package_xml.findtext('name') == 'fastdrivevla_ros'
    assert package_xml.find('export/build_type').text == 'ament_cmake'
    assert package_xml.findtext('member_of_group') == 'rosidl_interface_packages'
    buildtool = {e.text for e in package_xml.findall('buildtool_depend')}
    assert {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators'} <= buildtool
    assert package_xml.findtext('license') == 'Apache-2.0'


def declared(package_xml, *tags) -> set[str]:
    return {e.text for tag in tags for e in package_xml.findall(tag)}


def test_every_ros_package_imported_is_declared(package_xml):
    runtime = declared(package_xml, 'depend', 'exec_depend')
    tests = runtime | declared(package_xml, 'test_depend')
    local = {'fastdrivevla_ros', '__future__', '_scene'}
    stdlib = set(sys.stdlib_module_names)
    third_party = {'numpy': 'python3-numpy', 'yaml': 'python3-yaml', 'PIL': 'python3-pil',
                   'tf2_ros': 'tf2_ros_py', 'cv_bridge': 'cv_bridge'}
    for path in ROS_CODE + sorted((REPO / 'test').glob('test_ros_*.py')):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import):
                roots = [a.name.split('.')[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [node.module.split('.')[0]]
            else:
                continue
            for root in roots:
                if root in local | stdlib | {'io', 'subprocess', 'pytest'}:
                    continue
                key = third_party.get(root, root)
                pool = tests if path.parent.name == 'test' else runtime
                assert key in pool, f'{path.name} imports {root}: add <exec_depend>{key}'


def test_message_dependencies_are_declared_in_package_xml_and_cmake(package_xml, cmake):
    packages = set()
    for msg in (REPO / 'msg').glob('*.msg'):
        for line in msg.read_text().splitlines():
            field = line.split('#')[0].split()
            if field and '/' in field[0]:
                packages.add(field[0].split('/')[0])
    assert {'std_msgs', 'geometry_msgs', 'builtin_interfaces'} <= packages
    deps = re.search(r'DEPENDENCIES([^)]*)\)', cmake).group(1).split()
    for package in packages:
        assert package in declared(package_xml, 'depend'), f'<depend>{package}</depend> missing'
        assert package in deps, f'{package} missing from rosidl DEPENDENCIES'
        assert f'find_package({package} REQUIRED)' in cmake


def test_cmake_follows_the_verified_single_package_layout(cmake):
    assert 'file(GLOB _msg_files' in cmake and '"${CMAKE_CURRENT_SOURCE_DIR}/msg/*.msg"' in cmake
    assert re.search(r'rosidl_generate_interfaces\(\$\{PROJECT_NAME\}\s+\$\{_msg_files\}',
                     cmake)
    code = '\n'.join(line.split('#')[0] for line in cmake.splitlines())
    assert 'ament_python_install_package' not in code
    assert 'DESTINATION ${PYTHON_INSTALL_DIR}/${PROJECT_NAME}' in cmake
    assert 'install(DIRECTORY launch config rviz DESTINATION share/${PROJECT_NAME})' in cmake
    registered = set(re.findall(r'test/(test_\w+\.py)', cmake))
    ros_tests = {p.name for p in (REPO / 'test').glob('test_ros_*.py')}
    assert ros_tests and ros_tests <= registered
    assert all((REPO / 'test' / name).is_file() for name in registered)
    assert (REPO / 'fastdrivevla_ros' / '__init__.py').read_text().strip() == '', \
        'the generator installs an empty __init__.py at the same path'


def test_default_topics_match_the_converted_bags():
    """Relative names (so __ns moves inputs with outputs) resolve to the bags' topics at /."""
    config = NodeConfig(load_parameter_file(REPO / 'config' / 'drive.yaml'))   # no torch
    assert config.image_transport == 'compressed'
    for topic in (config.topic('CAM_FRONT'), config.odom_topic, config.ego_status_topic):
        assert not topic.startswith('/'), f'{topic} is absolute: __ns would not move it'
    assert '/' + config.topic('CAM_FRONT') == topics.camera_image('CAM_FRONT')
    assert '/' + config.odom_topic == topics.ODOMETRY
    assert '/' + config.ego_status_topic == topics.EGO_STATUS
    evaluator = (REPO / 'fastdrivevla_ros' / 'ros' / 'replay_evaluator_node.py').read_text()
    assert f"'{topics.GROUND_TRUTH.lstrip('/')}'" in evaluator


def test_launch_helpers_import_nothing_heavy():
    """`ros2 launch` runs on the system Python: no torch/transformers in the launch process."""
    import subprocess
    import sys

    code = ('import sys; from fastdrivevla_ros.pipeline.params import launch_value; '
            "[launch_value(n, v) for n, v in (('pruner', 'recon'), ('pruning_ratio', '0.5'), "
            "('model', '/m'), ('use_sim_time', 'true'))]; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == '[]'


def test_ros_tests_run_where_torch_is_absent(cmake):
    """Run the colcon-registered tests without torch (ROS machines): conftest must not need it."""
    import subprocess
    import sys

    # the node test needs ROS and a built package anyway; the others must run without torch
    tests = [t for t in re.findall(r'test/test_\w+\.py', cmake) if 'test_ros_' not in t]
    code = ('import sys; sys.modules["torch"] = None; import pytest; '
            f'sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-k", "not torch_is_absent", '
            f'*{tests!r}]))')
    run = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def install_commands(cmake: str) -> list[str]:
    """Return the text of every install(...) command in CMakeLists.txt, comments removed."""
    code = '\n'.join(line.split('#')[0] for line in cmake.splitlines())
    return [' '.join(m.split()) for m in re.findall(r'install\(([^)]*)\)', code)]


def test_colcon_install_has_the_fastdrivevla_command_and_the_demo_data(cmake):
    """docs/ros.md's recipe runs `fastdrivevla make-tiny-model` / `demo` in a colcon install."""
    import subprocess
    import sys

    commands = install_commands(cmake)
    assert 'PROGRAMS scripts/fastdrivevla DESTINATION bin' in commands
    assert any('scripts/fastdrivevla' in c and c.endswith('DESTINATION lib/${PROJECT_NAME}')
               for c in commands)
    setup = (REPO / 'setup.py').read_text()
    entry = re.search(r'"fastdrivevla = ([\w.]+):main"', setup).group(1)
    script = REPO / 'scripts' / 'fastdrivevla'
    assert f'from {entry} import main' in script.read_text()
    assert script.stat().st_mode & 0o111
    # every package_data glob of setup.py is installed next to the Python modules
    for pattern in re.findall(r'"(\w+)/\*"', re.search(r'package_data=\{[^}]*\}', setup)[0]):
        assert f'DIRECTORY ${{PROJECT_NAME}}/{pattern} DESTINATION ' \
               '${PYTHON_INSTALL_DIR}/${PROJECT_NAME}' in commands, pattern
    run = subprocess.run([sys.executable, str(script), '--help'], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and 'make-tiny-model' in run.stdout, run.stderr


def test_ros_workflow_installs_torch_and_transformers_in_setup_py_window(tmp_path):
    """CI under ROS must test the versions setup.py declares, not whatever is newest."""
    import subprocess
    import sys

    workflow = yaml.safe_load((REPO / '.github' / 'workflows' / 'ros.yml').read_text())
    steps = [step.get('run', '') for job in workflow['jobs'].values() for step in job['steps']]
    script = next(run for run in steps if 'pins.txt' in run)
    snippet = script.split("<<'EOF'\n", 1)[1].split('\nEOF', 1)[0]
    (tmp_path / 'pins.py').write_text(snippet)
    pins = subprocess.run([sys.executable, str(tmp_path / 'pins.py'), str(REPO / 'setup.py')],
                          capture_output=True, text=True, check=True).stdout.split()
    setup = ast.parse((REPO / 'setup.py').read_text())
    requires = next(ast.literal_eval(kw.value) for call in string_calls(setup, 'setup')
                    for kw in call.keywords if kw.arg == 'install_requires')
    assert pins == [r for r in requires if re.match(r'(torch|transformers)\b', r)]
    for line in script.splitlines():
        if 'pip install' in line and ('torch' in line or './src' in line):
            assert '-c /tmp/pins.txt' in line, line


def test_string_parameters_reach_the_nodes_as_strings():
    """launch_ros reads a plain string as YAML: '{"layer": 3}' would be a dict (refused)."""
    helpers = parse(REPO / 'fastdrivevla_ros' / 'ros' / 'launch_helpers.py')
    wrap = next(n for n in helpers.body if isinstance(n, ast.FunctionDef)
                and n.name == 'as_parameters')
    calls = string_calls(wrap, 'ParameterValue')
    assert calls and ast.unparse(keyword(calls[0], 'value_type')) == 'str'
    for path, function in ((REPO / 'fastdrivevla_ros' / 'ros' / 'launch_helpers.py',
                            'drive_node'), (REPO / 'launch' / 'replay.launch.py', '_nodes')):
        body = next(n for n in parse(path).body if isinstance(n, ast.FunctionDef)
                    and n.name == function)
        for call in string_calls(body, 'Node'):
            params = keyword(call, 'parameters')
            dicts = [e for e in params.elts if not isinstance(e, ast.Name)]
            assert all(isinstance(e, ast.Call) and e.func.id == 'as_parameters'
                       for e in dicts), f'{path.name}: a parameter dict not via as_parameters'
