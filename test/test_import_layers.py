"""
Layers point down: every import in the package obeys docs/ARCHITECTURE's rules.

ros, cli -> pipeline -> (eval, training, bench) -> data -> vla -> pruning -> viz -> compat -> errors.
Imports inside functions count too (a lazy import is still a dependency); only imports under
`if TYPE_CHECKING:` are skipped, since they never run.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'fastdrivevla_ros'

# package (first component under fastdrivevla_ros) -> layer; a module may import its own
# package and packages of a strictly lower layer, never a peer on the same layer.
LAYERS = {
    'ros': 8, 'cli': 8,
    'pipeline': 7,
    'eval': 6, 'training': 6, 'bench': 6,
    'data': 5,
    'vla': 4,
    'pruning': 3,
    'viz': 2,
    'compat': 1, 'checkpoint': 1, 'conventions': 1,
    'errors': 0, 'files': 0,
}
# third-party modules only the ROS adapter (and launch files) may import
ROS_ONLY = {'rclpy', 'message_filters', 'cv_bridge', 'launch', 'launch_ros', 'tf2_ros',
            'rcl_interfaces', 'builtin_interfaces', 'std_msgs', 'sensor_msgs', 'nav_msgs',
            'geometry_msgs', 'visualization_msgs', 'diagnostic_msgs', 'fastdrivevla_ros.msg'}
def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of import nodes inside `if TYPE_CHECKING:` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    module = '.'.join(path.relative_to(REPO).with_suffix('').parts)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:   # relative: resolve against this module's package
                parent = module.split('.')[:-node.level]
                base = '.'.join(parent + ([base] if base else []))
            names = [f'{base}.{a.name}' for a in node.names] if base == 'fastdrivevla_ros' \
                else [base]
            found += [(node.lineno, name) for name in names]
    return found


def _layer_of(module: str) -> str | None:
    parts = module.split('.')
    if parts[0] != 'fastdrivevla_ros' or len(parts) < 2:
        return None
    return parts[1]


def _is_ros_only(name: str) -> bool:
    return any(name == m or name.startswith(m + '.') for m in ROS_ONLY)


def violations(path: Path) -> list[str]:
    """Every import in `path` that breaks the layer rules, as 'file:line: reason'."""
    rel = path.relative_to(REPO)
    own = _layer_of('.'.join(rel.with_suffix('').parts)) if rel.parts[0] == PACKAGE.name \
        else 'launch'
    out = []
    for line, name in imports(path):
        where = f'{rel}:{line}: {own} imports {name}'
        if _is_ros_only(name):
            if own not in ('ros', 'launch'):
                out.append(where + ' (only ros/ and launch files may)')
            continue
        if name == 'argparse' and own != 'cli':
            out.append(where + ' (argparse lives in cli/ only)')
            continue
        target = _layer_of(name)
        if target is None or target == own or own == 'launch':
            continue
        if own not in LAYERS or target not in LAYERS:
            out.append(where + ' (module has no layer: add it to LAYERS)')
        elif LAYERS[target] >= LAYERS[own]:
            out.append(where + ' (imports point down only)')
    return out


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob('*.py')) + sorted((REPO / 'launch').glob('*.py'))


def test_every_package_module_has_a_layer():
    unknown = {p.relative_to(PACKAGE).parts[0].removesuffix('.py')
               for p in PACKAGE.rglob('*.py') if p.parent != PACKAGE or p.name != '__init__.py'}
    assert unknown <= set(LAYERS), f'modules without a layer: {sorted(unknown - set(LAYERS))}'


def test_imports_point_down_the_layers():
    found = [v for path in _files() for v in violations(path)]
    assert not found, 'layer rule broken:\n' + '\n'.join(found)


def test_the_walk_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an import inside a function and a relative one are both caught."""
    fake = tmp_path / 'fastdrivevla_ros' / 'vla'
    fake.mkdir(parents=True)
    source = fake / 'm.py'
    source.write_text('def f():\n    from fastdrivevla_ros.eval import metrics\n'
                      'from ..pipeline import params\nimport rclpy\n'
                      'from typing import TYPE_CHECKING\n'
                      'if TYPE_CHECKING:\n    from fastdrivevla_ros.data import scene\n')
    monkeypatch.setattr(sys.modules[__name__], 'REPO', tmp_path)
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', tmp_path / 'fastdrivevla_ros')
    found = violations(source)
    assert len(found) == 3, found
    assert any('eval' in v for v in found) and any('pipeline' in v for v in found)
    assert any('rclpy' in v for v in found)
