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
#
# The whole-plan table on one GPU, in one command (under 6 minutes on one H100):
#   benchmarks/gpu_plan.sh [--smoke] [--out DIR] [-- EXTRA gpu_plan.py OPTIONS]
# builds Qwen2.5-VL-3B's shapes with random weights in bfloat16 directly on the GPU
# (make-tiny-model --preset 3b, reused when DIR/model-3b exists), then runs
# benchmarks/gpu_plan.py: transformers generate vs ours (dynamic / static / compiled x draft
# none / oracle x ratio 0 / 0.75), six views, stage times and peak memory; the table is printed
# and written to DIR/gpu_plan.md (+ .json). --smoke: the same end to end on the CPU with the
# tiny preset, one timed round (what test/test_gpu_plan_smoke.py runs).
# PYTHON selects the interpreter (default: python3 with this checkout first on PYTHONPATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
smoke=0
out="out/gpu_plan"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_plan.sh: --out needs a directory" >&2; exit 2; }
           out="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '16,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_plan.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  preset=tiny; device=cpu; dtype=float32; rounds=(--repeats 1 --warmup 0)
else
  preset=3b; device=cuda; dtype=bfloat16; rounds=(--repeats 3 --warmup 1)
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "gpu_plan.sh: no CUDA GPU visible to torch; run with --smoke on a CPU" >&2; exit 2; }
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
model="$out/model-$preset"
start=$SECONDS
if [ ! -f "$model/config.json" ]; then
  "$py" -m fastdrivevla_ros.cli make-tiny-model "$model" --preset "$preset" \
    --device "$device" --dtype "$dtype"
fi
echo "model ready in $((SECONDS - start)) s: $model"
"$py" "$here/benchmarks/gpu_plan.py" --model "$model" --device "$device" --dtype "$dtype" \
  --out "$out" "${rounds[@]}" "${extra[@]}"
echo "whole run: $((SECONDS - start)) s"
