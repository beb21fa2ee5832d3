"""bench.json / scaling.json -> markdown tables (paper Table 4 layout) and plots."""

from __future__ import annotations

import json
from pathlib import Path

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.files import save_figure, write_text


# ---------------------------------------------------------------------------------- formatting
def _sig(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def _flop_unit(value: float) -> tuple[str, float]:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return unit, scale
    return "M", 1e6


def _x(speedup: float | None) -> str:
    return "" if speedup is None else f" (×{speedup:.2f})"


def _spread(s: dict) -> str:
    return f"{_sig(s['median'])} ({_sig(s['p25'])}–{_sig(s['p75'])})"


def _method(rec: dict) -> str:
    if rec["pruner"] == "none":
        return "Unpruned"
    return rec["pruner"] + (" (untrained)" if rec.get("options", {}).get("untrained") else "")


def header_line(header: dict) -> str:
    d, s = header["device"], header["settings"]
    visual = " + ".join(f"{r * c}" for r, c in s["grids"])
    size = (f"{s['image_size'][0]}x{s['image_size'][1]}" if s.get("image_size")
            else f"max_pixels {s['max_pixels']}")
    load = header.get("load_average", {})
    return (f"{d['name']} ({d['type']}, {d['torch_threads']} torch threads), {header['dtype']}, "
            f"{header['attn_implementation']} · torch {header['versions']['torch']}, "
            f"transformers {header['versions']['transformers']} · {s['views']} view(s) at {size}"
            f" → {visual} visual tokens · decode {_decode_mode(s)} · "
            f"{s['repeats']} interleaved rounds after {s['warmup']} warm-up · "
            f"load average {load.get('start')} → {load.get('end')}")


def _decode_mode(s: dict) -> str:
    if s.get("decode_tokens"):
        return f"{s['decode_tokens']} fixed tokens (no grammar, no stop)"
    forced = "forced tokens" if s.get("forced_tokens", True) else "step by step"
    return f"the real constrained reply ({forced})"


def plans_markdown(rows: list[dict]) -> list[str]:
    """The whole-plan table: transformers generate vs our decoding modes."""
    lines = ["## Whole plan: transformers generate vs ours (median (p25–p75) ms)", "",
             "| Mode | Plan | Preprocess | Vision | Scoring | Prefill | Decode | Decode passes "
             "| Tokens emitted | Draft / accepted tokens | Plan speedup vs generate "
             "| Decode speedup vs step by step | Plan time vs no draft |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"| {r['label']} | {_spread(ms['plan'])} | {_spread(ms['preprocess'])} | "
            f"{_spread(ms['vision'])} | {_spread(ms['scoring'])} | {_spread(ms['prefill'])} | "
            f"{_spread(ms['decode'])} | {r['decode_passes']} | {r['tokens_emitted']} | "
            f"{r.get('draft_tokens', 0)} / {r.get('accepted_tokens', 0)} | "
            f"{_num(r['speedup_plan_vs_generate'])} | "
            f"{_num(r['speedup_decode_vs_step_by_step'])} | "
            f"{_num(r.get('plan_time_vs_draft_none'))} |")
    return lines + [""]


# ---------------------------------------------------------------------------------- bench.md
def bench_markdown(doc: dict) -> str:
    """Paper Table 4 layout (FLOPs without the vision encoder, prefill incl. the pruner's
    scoring, decode per token) plus a per-stage table with spreads and both speedups."""
    header, records = doc["header"], doc["records"]
    unit, scale = _flop_unit(records[0]["flops"]["total_without_vision"])
    lines = [f"# Efficiency benchmark: {header['settings']['model_dir']}", "",
             header_line(header), ""]
    if doc.get("plans"):
        lines += plans_markdown(doc["plans"])
    lines += ["## Table 4 layout (wall clock)", ""]
    lines += _table4(records, unit, scale, "ms", "speedup")
    if records[0].get("cpu_ms"):
        lines += ["", "## Table 4 layout (process CPU time: robust to other load on the "
                  "machine)", ""]
        lines += _table4(records, unit, scale, "cpu_ms", "speedup_cpu")
    lines += ["", "FLOPs speedups are the FLOP bound (ratio-0 FLOPs / these FLOPs); ms speedups "
              "are measured (ratio-0 median / this median) in the same run; prefill includes "
              "the pruner's scoring.", "",
              "## Per stage (median (p25–p75) ms over rounds)", "",
              "| Method | Ratio | Token | Vision | Scoring | Prefill | Decode/token | Plan | "
              "Peak MiB | Prefill speedup measured / FLOP bound | Plan speedup measured / FLOP "
              "bound |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        ms, sp, fb = r["ms"], r["speedup"], r["flop_bound_speedup"]
        lines.append(
            f"| {_method(r)} | {r['ratio']:.0%} | {r['tokens']['visual_kept']} | "
            f"{_spread(ms['vision'])} | {_spread(ms['scoring'])} | {_spread(ms['prefill'])} | "
            f"{_spread(ms['decode_per_token'])} | {_spread(ms['plan'])} | "
            f"{r['peak_memory_mib']['max']:.0f} | {_num(sp['prefill'])} / "
            f"{_num(fb['prefill'])} | {_num(sp['plan'])} / {_num(fb['total'])} |")
    lines += ["", "## FLOPs per stage", "",
              f"| Method | Ratio | Vision | Pruner | Pruner in vision | Prefill | of which "
              f"attention | Decode/token | Total ({unit}) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        f = r["flops"]
        lines.append(
            f"| {_method(r)} | {r['ratio']:.0%} | {_sig(f['vision'] / scale)} | "
            f"{_sig(f['pruner'] / scale)} | {_sig(f['pruner_in_vision'] / scale)} | "
            f"{_sig(f['prefill'] / scale)} | "
            f"{_sig(f['prefill_attention'] / scale)} | {_sig(f['decode_per_token'] / scale)} | "
            f"{_sig(f['total'] / scale)} |")
    if header.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- {s['pruner']}: {s['reason']}"
                                         for s in header["skipped"]]
    lines += ["", "## Method", ""] + [f"- {n}" for n in header.get("notes", [])]
    return "\n".join(lines) + "\n"


def _table4(records: list[dict], unit: str, scale: float, ms_key: str,
            speed_key: str) -> list[str]:
    """Rows in the paper's Table 4 layout from `ms_key` times and `speed_key` speedups."""
    lines = [f"| Method | Ratio | Token | FLOPs ({unit}) excl. vision | FLOPs ({unit}) incl. "
             "vision | Prefill+scoring (ms) | Decode (ms/token) | Plan (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        f, ms, sp, fb = r["flops"], r[ms_key], r[speed_key], r["flop_bound_speedup"]
        prefill = ms["prefill"]["median"] + ms["scoring"]["median"]
        lines.append(
            f"| {_method(r)} | {r['ratio']:.0%} | {r['tokens']['visual_kept']} | "
            f"{_sig(f['total_without_vision'] / scale)}{_x(fb['total_without_vision'])} | "
            f"{_sig(f['total'] / scale)}{_x(fb['total'])} | "
            f"{_sig(prefill)}{_x(sp['prefill_with_scoring'])} | "
            f"{_sig(ms['decode_per_token']['median'])}{_x(sp['decode_per_token'])} | "
            f"{_sig(ms['plan']['median'])}{_x(sp['plan'])} |")
    return lines


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------------------------- plots
def plot_prefill_vs_tokens(doc: dict, path: Path) -> Path:
    """Measured prefill (+ scoring) ms vs kept visual tokens per pruner, with the FLOP-bound
    expectation (ratio-0 ms scaled by the FLOP ratio) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = doc["records"]
    base = records[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pruners = [p for p in dict.fromkeys(r["pruner"] for r in records[1:])] or ["none"]
    for i, name in enumerate(pruners):
        rows = [base] + [r for r in records[1:] if r["pruner"] == name]
        rows.sort(key=lambda r: r["tokens"]["visual_kept"])
        x = [r["tokens"]["visual_kept"] for r in rows]
        y = [r["ms"]["prefill"]["median"] + r["ms"]["scoring"]["median"] for r in rows]
        lo = [yy - r["ms"]["prefill"]["p25"] - r["ms"]["scoring"]["p25"] for yy, r in zip(y, rows)]
        hi = [r["ms"]["prefill"]["p75"] + r["ms"]["scoring"]["p75"] - yy for yy, r in zip(y, rows)]
        color = f"C{i % 10}"
        ax.errorbar(x, y, yerr=[[max(0, v) for v in lo], [max(0, v) for v in hi]], marker="o",
                    color=color, capsize=3, label=name if name != "none" else "unpruned")
        # where time would be if it fell with the FLOPs (prefill + pruner)
        bound = [y[-1] / (r["flop_bound_speedup"]["prefill_with_pruner"] or 1) for r in rows]
        ax.plot(x, bound, "--", color=color, alpha=0.5)
    ax.plot([], [], "--", color="gray", label="dashed: ratio-0 ms × FLOP ratio")
    ax.set_xlabel("kept visual tokens")
    ax.set_ylabel("prefill + scoring (ms, median, p25–p75)")
    ax.set_title(f"Prefill vs kept tokens ({doc['header']['device']['name']}, "
                 f"{doc['header']['dtype']})", fontsize=9)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)
    return path


def scaling_markdown(doc: dict) -> str:
    header, rows = doc["header"], doc["points"]
    d = header["device"]
    lines = [f"# Prefill scaling: {header['settings']['model_dir']}", "",
             f"{d['name']} ({d['type']}, {d['torch_threads']} threads), {header['dtype']}, "
             f"{header['attn_implementation']}, unpruned, {header['settings']['repeats']} "
             f"rounds · load average {header['load_average']['start']} → "
             f"{header['load_average']['end']}", "",
             "| Point | Visual tokens | Prefill tokens | Prefill ms (p25–p75) | Prefill CPU ms "
             "| Prefill GFLOPs | Attention share | ms / linear extrapolation | FLOPs / linear "
             "extrapolation | Vision ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = _sig(r["cpu_ms"]["prefill"]["median"]) if r.get("cpu_ms") else "–"
        lines.append(
            f"| {r['label']} | {r['tokens']['visual']} | {r['tokens']['prefill']} | "
            f"{_spread(r['ms']['prefill'])} | {cpu} | {_sig(r['flops']['prefill'] / 1e9)} | "
            f"{r['attention_share']:.0%} | {_num(r['superlinearity']['ms'])} | "
            f"{_num(r['superlinearity']['flops'])} | {_sig(r['ms']['vision']['median'])} |")
    lines += ["", "Linear extrapolation: the smallest point's value scaled by prefill tokens. "
              "Attention share: SDPA FLOPs / all prefill FLOPs (full L×L scores counted)."]
    return "\n".join(lines) + "\n"


def plot_scaling(doc: dict, path: Path) -> Path:
    """Left: prefill ms vs visual tokens with the linear extrapolation. Right: prefill FLOPs split
    into linear (matmul) and attention parts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["points"]
    x = [r["tokens"]["visual"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    y = [r["ms"]["prefill"]["median"] for r in rows]
    lin = [y[0] * r["tokens"]["prefill"] / rows[0]["tokens"]["prefill"] for r in rows]
    a.plot(x, y, "o-", label="measured (median)")
    a.plot(x, lin, "--", color="gray", label="linear from first point")
    for r, xx, yy in zip(rows, x, y):
        a.annotate(r["label"], (xx, yy), fontsize=7, textcoords="offset points", xytext=(4, -10))
    a.set(xlabel="visual tokens", ylabel="prefill ms", title="Prefill time (unpruned)")
    lin_f = [r["flops"]["prefill_linear"] / 1e9 for r in rows]
    att_f = [r["flops"]["prefill_attention"] / 1e9 for r in rows]
    b.plot(x, lin_f, "s-", label="linear layers")
    b.plot(x, att_f, "^-", label="attention (L² term)")
    b.plot(x, [p + q for p, q in zip(lin_f, att_f)], "o-", label="total")
    b.set(xlabel="visual tokens", ylabel="prefill GFLOPs", title="Prefill FLOPs split")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    save_figure(fig, path, dpi=120)
    return path


# ---------------------------------------------------------------------------------- writing
def _out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(doc: dict, path: Path) -> Path:
    # allow_nan=False: a NaN would be invalid JSON and always means a measurement bug
    write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def _write_report(doc: dict, out_dir, name: str, validate, markdown, plot,
                  plot_name: str) -> dict[str, Path]:
    """Validate `doc`, then write NAME.json, NAME.md and the plot into out_dir."""
    validate(doc)
    out = _out_dir(out_dir)
    md = out / f"{name}.md"
    write_text(md, markdown(doc))
    return {"json": write_json(doc, out / f"{name}.json"), "markdown": md,
            "plot": plot(doc, out / plot_name)}


def write_bench(doc: dict, out_dir) -> dict[str, Path]:
    """bench.json, bench.md and prefill_vs_tokens.png in out_dir."""
    from fastdrivevla_ros.bench.schema import validate_bench

    return _write_report(doc, out_dir, "bench", validate_bench, bench_markdown,
                         plot_prefill_vs_tokens, "prefill_vs_tokens.png")


def write_scaling(doc: dict, out_dir) -> dict[str, Path]:
    """scaling.json, scaling.md and scaling.png in out_dir."""
    from fastdrivevla_ros.bench.schema import validate_scaling

    return _write_report(doc, out_dir, "scaling", validate_scaling, scaling_markdown,
                         plot_scaling, "scaling.png")
