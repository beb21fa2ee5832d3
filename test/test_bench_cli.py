"""`fastdrivevla bench` end to end on the tiny model: outputs, schema, speedups, skips."""

from __future__ import annotations

import copy
import json

import pytest

from fastdrivevla_ros.bench.schema import validate_bench, validate_scaling
from fastdrivevla_ros.cli import main
from fastdrivevla_ros.errors import DataError


@pytest.fixture(scope="module")
def bench_out(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(["bench", "--model", str(tiny_model_dir), "--pruners", "none,random",
                 "--ratios", "0,0.5", "--image-size", "336x224", "--repeats", "2",
                 "--warmup", "1", "--plan-pruner", "random", "--plan-drafts", "oracle,wrong",
                 "--out", str(out)])
    assert code == 0
    return out


def test_bench_cli_writes_json_that_validates_against_the_schema(bench_out):
    doc = json.loads((bench_out / "bench.json").read_text())
    validate_bench(doc)
    assert [(r["pruner"], r["ratio"]) for r in doc["records"]] == [("none", 0.0), ("random", 0.5)]
    base, pruned = doc["records"]
    assert base["tokens"]["visual_total"] == 96                 # 8 x 12 tokens at 336x224
    assert pruned["tokens"]["visual_kept"] == 48
    assert base["speedup"]["prefill"] == 1.0 and base["flop_bound_speedup"]["total"] == 1.0
    assert pruned["flop_bound_speedup"]["prefill"] > 1.0
    # the real constrained reply (~150 tokens), forced tokens: about half as many passes
    assert all(r["num_generated"] >= 100 for r in doc["records"])
    assert all(0 < r["decode_passes"] <= 0.5 * r["num_generated"] for r in doc["records"])
    assert pruned["ms"]["prefill"]["n"] == 2
    assert pruned["cpu_ms"]["prefill"]["n"] == 2 and pruned["speedup_cpu"]["prefill"] > 0
    assert doc["header"]["device"]["type"] == "cpu"


def test_bench_cli_writes_table4_markdown_and_plot(bench_out):
    md = (bench_out / "bench.md").read_text()
    assert "| Method | Ratio | Token |" in md
    assert "| Unpruned | 0% | 96 |" in md and "| random | 50% | 48 |" in md
    assert "## Whole plan: transformers generate vs ours" in md
    assert "| transformers generate |" in md and "| ours, forced tokens + random 75% |" in md
    assert (bench_out / "prefill_vs_tokens.png").stat().st_size > 1000


def test_schema_rejects_a_record_without_flops(bench_out):
    doc = json.loads((bench_out / "bench.json").read_text())
    broken = copy.deepcopy(doc)
    del broken["records"][1]["flops"]["prefill"]
    with pytest.raises(DataError, match="prefill"):
        validate_bench(broken)
    broken = copy.deepcopy(doc)
    broken["records"][0]["ratio"] = 1.0
    with pytest.raises(DataError):
        validate_bench(broken)


def test_bench_cli_sets_generate_beside_our_decoding_modes(bench_out):
    plans = json.loads((bench_out / "bench.json").read_text())["plans"]
    forced_rows = ["ours, forced tokens", "ours, forced tokens + random 50%",
                   "ours, forced tokens + random 75%"]
    assert [p["label"] for p in plans] == [
        "transformers generate", "ours, step by step", *forced_rows,
        *[f"{row} + draft {kind}" for kind in ("oracle", "wrong") for row in forced_rows]]
    generate, step, forced = plans[:3]
    assert generate["tokens_emitted"] == step["tokens_emitted"] >= 100
    assert step["decode_passes"] == step["tokens_emitted"] - 1
    assert forced["decode_passes"] <= 0.5 * forced["tokens_emitted"]
    assert all(p["status"] == "ok" for p in plans[1:])
    assert generate["speedup_plan_vs_generate"] == 1.0 and step["ms"]["decode"]["n"] == 2


def test_only_pruners_missing_bench_data_are_skipped(tiny_model_dir):
    from fastdrivevla_ros.bench.runner import run_bench
    from fastdrivevla_ros.pruning.registry import available_pruners

    doc = run_bench(tiny_model_dir, ratios=[0.5], image_size=(224, 224), repeats=1, warmup=0,
                    decode_tokens=2, progress=False)
    validate_bench(doc)
    measured = {r["pruner"] for r in doc["records"]}
    skipped = {s["pruner"]: s["reason"] for s in doc["header"]["skipped"]}
    assert set(skipped) == {"mask_oracle"} and "foreground mask" in skipped["mask_oracle"]
    assert measured == set(available_pruners()) - {"mask_oracle"}


def test_a_pruner_error_fails_the_bench(tiny_model_dir, monkeypatch):
    """An invalid selection is a bug: the bench stops instead of skipping the pruner."""
    from fastdrivevla_ros.bench.runner import run_bench
    from fastdrivevla_ros.pruning.base import Selection
    from fastdrivevla_ros.pruning.registry import pruner_class

    def select(self, ctx, budgets):
        return Selection([v.indices[:1] for v in ctx.views], [None] * len(ctx.views))

    monkeypatch.setattr(pruner_class("random"), "select", select)
    with pytest.raises(RuntimeError, match="invalid selection"):
        run_bench(tiny_model_dir, pruners=["random"], ratios=[0.5], image_size=(224, 224),
                  repeats=1, warmup=0, decode_tokens=2, progress=False)


def test_bench_rejects_bad_arguments(tiny_model_dir, tmp_path, capsys):
    code = main(["bench", "--model", str(tiny_model_dir), "--ratios", "0,1.5",
                 "--out", str(tmp_path)])
    assert code == 2 and "ratios" in capsys.readouterr().err
    code = main(["bench", "--model", str(tiny_model_dir), "--pruners", "nonsense",
                 "--out", str(tmp_path)])
    assert code == 2 and "unknown pruner" in capsys.readouterr().err


def test_scaling_curve_shows_attention_share_growing(tiny_model_dir, tmp_path):
    from fastdrivevla_ros.bench.report import write_scaling
    from fastdrivevla_ros.bench.scaling import run_scaling

    doc = run_scaling(tiny_model_dir, ["1:448x448", "1:224x224"], repeats=1, warmup=0,
                      progress=False)
    validate_scaling(doc)
    small, large = doc["points"]                              # sorted by visual tokens
    assert (small["tokens"]["visual"], large["tokens"]["visual"]) == (64, 256)
    assert large["attention_share"] > small["attention_share"]
    assert large["superlinearity"]["flops"] > 1.0             # the L^2 term
    paths = write_scaling(doc, tmp_path)
    assert "| 1x448x448 | 256 |" in paths["markdown"].read_text()


def test_whole_plan_table_repeats_forced_rows_with_the_reply_and_a_wrong_draft(bench_out):
    rows = {r["label"]: r for r in json.loads((bench_out / "bench.json").read_text())["plans"]}
    plain = rows["ours, forced tokens"]
    oracle = rows["ours, forced tokens + draft oracle"]
    wrong = rows["ours, forced tokens + draft wrong"]
    assert oracle["tokens_emitted"] == wrong["tokens_emitted"] == plain["tokens_emitted"]
    assert oracle["decode_passes"] <= 3 and oracle["accepted_tokens"] > 0
    assert wrong["draft_tokens"] > 0 and wrong["accepted_tokens"] < wrong["draft_tokens"]
    assert plain["draft_tokens"] == 0 and plain["plan_time_vs_draft_none"] is None
    assert oracle["plan_time_vs_draft_none"] > 0
    assert "Draft / accepted tokens" in (bench_out / "bench.md").read_text()
