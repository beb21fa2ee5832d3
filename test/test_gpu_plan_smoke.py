"""benchmarks/gpu_plan.sh --smoke: the GPU plan's one command, end to end on the CPU (tiny)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_plan.sh"


def run(*args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)


def test_smoke_prints_the_whole_plan_table(tmp_path, tiny_model_dir):
    out = tmp_path / "plan"
    out.mkdir()
    (out / "model-tiny").symlink_to(tiny_model_dir)   # the script reuses a built model
    # dynamic and static only: torch.compile on a CPU takes minutes (the GPU run has all three)
    done = run("--smoke", "--out", str(out), "--", "--decode-steps", "dynamic,static",
               tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "gpu_plan.json").read_text())
    rows = doc["rows"]
    labels = [r["label"] for r in rows]
    drafts = ["none", "oracle"] if doc["draft_supported"] else ["none"]
    assert labels == ["transformers generate"] + [
        f"ours {s} draft={d} ratio={r}" for s in ("dynamic", "static") for d in drafts
        for r in ("0", "0.75")]
    assert doc["grids"] == [[14, 24]] * 6
    for r in rows:
        assert r["plan"] > 0 and r["peak_mib"] > 0 and r["tokens"] > 0 and r["same_reply"]
    assert all(r["passes"] < r["tokens"] / 2 for r in rows[1:])    # forced tokens ride along
    for r in rows[1:]:     # the plan's own reply as draft: verified in a pass or two
        assert (r["passes"] <= 3 and r["accepted_tokens"] > 0) == (r["draft"] == "oracle")
    assert "| transformers generate |" in done.stdout and (out / "gpu_plan.md").is_file()


def test_bad_option_is_one_line_and_exit_2(tmp_path):
    done = run("--bogus", tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "unknown option --bogus" in done.stderr and not list(tmp_path.iterdir())
