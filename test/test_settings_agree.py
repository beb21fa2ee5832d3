"""One settings schema: the node, every CLI command and PlannerSettings agree on every value."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from fastdrivevla_ros.cli import build_parser, COMMANDS
from fastdrivevla_ros.cli.settings import resolve_settings
from fastdrivevla_ros.pipeline.params import validate_config
from fastdrivevla_ros.vla.settings import engine_kwargs, ENGINE_KEYS

# commands whose settings come from the schema, with the arguments they need
SETTINGS_COMMANDS = {"replay": ["BAG", "--out", "RUN"], "search-budgets": ["BAG", "--out", "O"],
                     "plan": [], "demo": ["--untrained"], "bench": ["--out", "O"],
                     "train-pruner": ["--data", "D", "--out", "O"]}


def _args(command: str, argv: list[str]):
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions).choices[command]
    importlib.import_module(COMMANDS[command][0]).configure_parser(sub)
    return parser.parse_args([command, *argv])


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions).choices[command]
    importlib.import_module(COMMANDS[command][0]).configure_parser(sub)
    return sub.format_help()


def _planner_fields(kwargs: dict) -> dict:
    from fastdrivevla_ros.vla.engine import PlannerSettings

    names = {f.name for f in dataclasses.fields(PlannerSettings)}
    return {k: v for k, v in kwargs.items() if k in names}


@pytest.mark.parametrize("command", sorted(SETTINGS_COMMANDS))
def test_node_defaults_equal_cli_defaults_equal_planner_settings(command):
    """Every setting flag defaults to the node's value, but for a command's declared presets."""
    from fastdrivevla_ros.vla.engine import PlannerSettings

    node = validate_config({"model": "m"}).as_dict()
    args = _args(command, SETTINGS_COMMANDS[command])
    names = [k for k in ENGINE_KEYS if hasattr(args, k) or k == "image_height"]
    assert "max_pixels" in names and "--config" in _help(command)
    cli = resolve_settings(args, names)
    same = [k for k in names if k != "model" and k not in args._presets
            and getattr(args, k, None) is None]
    assert {k: cli[k] for k in same} == {k: node[k] for k in same}
    assert set(args._presets) <= {"pruner", "pruning_ratio", "cameras", "warmup"}
    planner = dataclasses.asdict(PlannerSettings())
    assert _planner_fields(engine_kwargs(node)) == \
        {k: planner[k] for k in _planner_fields(engine_kwargs(node))}


def test_a_search_budgets_yaml_runs_the_same_in_replay_and_the_node(tmp_path, tiny_model_dir):
    """What search-budgets writes resolves to the same planner in `replay --config` and the node."""
    from fastdrivevla_ros.cli.replay import planner_settings, resolve
    from fastdrivevla_ros.cli.search_budgets import write_budgets
    from fastdrivevla_ros.eval.budget_search import SearchResult, Trial
    from fastdrivevla_ros.vla.settings import load_parameter_file

    model = tiny_model_dir          # the model is checked (config, weights, tokenizer) too
    base = tmp_path / "drive.yaml"
    base.write_text("/**:\n  ros__parameters:\n    odom_topic: car/odom\n    max_pixels: 50176\n"
                    "    constrained: false\n")
    searched = resolve_settings(_args("search-budgets", [
        "BAG", "--out", "o", "--model", str(model), "--config", str(base),
        "--cameras", "CAM_FRONT", "CAM_BACK", "--image-size", "448x252",
        "--max-new-tokens", "64"]), ENGINE_KEYS)
    best = Trial(0, [0.75, 0.25], 1.0, 1.0, 0.03, -1.03)
    result = SearchResult(["CAM_FRONT", "CAM_BACK"], best, [best], 1.0)
    written = write_budgets(result, searched, base, tmp_path / "budgets.yaml")

    node = validate_config(load_parameter_file(written))
    replay = resolve(_args("replay", ["BAG", "--out", "RUN", "--config", str(written)]))
    assert replay.engine == node.engine_kwargs()
    assert planner_settings(replay.engine) == planner_settings(node.engine_kwargs())
    kw = replay.engine
    assert kw["pruner"] == "tfps" and kw["view_ratios"] == (0.25, 0.75)
    assert kw["cameras"] == ("CAM_FRONT", "CAM_BACK") and kw["image_size"] == (448, 252)
    assert kw["max_pixels"] == 50176 and kw["constrained"] is False
    assert kw["max_new_tokens"] == 64 and node.odom_topic == "car/odom"


def test_a_typo_in_a_config_is_refused_by_the_cli_as_by_the_node(tmp_path):
    from fastdrivevla_ros.errors import ConfigError

    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    pruning_ration: 0.5\n")
    with pytest.raises(ConfigError, match="did you mean 'pruning_ratio'"):
        resolve_settings(_args("replay", ["BAG", "--out", "RUN", "--config", str(path)]),
                         ENGINE_KEYS)
