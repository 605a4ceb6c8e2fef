#!/usr/bin/env bash
# The GPU check: one NVIDIA GPU, the checkout, and the wheels in .whl/ that the GPU machine's image lacks.
# In under 8 minutes: the local engine on a Qwen2.5-3B-shaped model with random bf16 weights and 16 random
# adapters (r16, all 7 modules): decode tok/s at batch 1, 8 and 32 over mixed adapters, adapter hot-load time,
# NVML joules per token (benchmarks/gpu_check.py), then the `gpu`-marked exactness tests. One JSON comes out.
#
#   benchmarks/gpu_check.sh --fetch-wheels     # once, where pip reaches PyPI: the wheels into .whl/ (ignored)
#   benchmarks/gpu_check.sh [OUT.json]         # on the GPU machine (default: $OUT/gpu_check.json or ./gpu_check.json)
#   benchmarks/gpu_check.sh --dry-run [OUT]    # the same code on the CPU with a tiny shape (no GPU needed)
#
# The wheels: the kit's pinned transformers and peft (the image has older ones) and pydantic, which the image
# lacks; the image's torch, accelerate, safetensors, tokenizers, huggingface-hub and nvidia-ml-py are used.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(transformers==5.24.0 peft==0.21.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    PY=${PYTHON:-.venv/bin/python}
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi

MODE=gpu
if [[ "${1:-}" == "--dry-run" ]]; then MODE=dry; shift; fi
RESULT=${1:-${OUT:+$OUT/gpu_check.json}}
RESULT=${RESULT:-gpu_check.json}
WORK=$(mktemp -d /tmp/gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [[ $MODE == dry ]]; then
    PY=${PYTHON:-.venv/bin/python}
    BENCH=(--device cpu --tiny --adapters 16 --tokens 8 --repeats 1)
else
    PY=${PYTHON:-python3}
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    BENCH=(--device cuda --adapters 16 --tokens 64 --repeats 3)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
"$PY" - <<'EOF' || { echo "missing Python packages: run benchmarks/gpu_check.sh --fetch-wheels where pip works, and carry .whl" >&2; exit 2; }
import importlib
for name in ("torch", "transformers", "peft", "pydantic", "safetensors", "pynvml", "pytest"):
    importlib.import_module(name)
EOF
export PYTHONUNBUFFERED=1

# 1. the engine on the 3B shape (~2-4 minutes on an H100/H200: writing 6 GB of random weights dominates)
start=$(date +%s)
timeout 420 "$PY" benchmarks/gpu_check.py "${BENCH[@]}" --work "$WORK" --out "$WORK/bench.json"
bench_s=$(( $(date +%s) - start ))
rm -rf "$WORK/model" "$WORK/adapters"

# 2. the gpu-marked tests (they skip without CUDA); plugins the image lacks are not needed for them
start=$(date +%s)
set +e
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    tests/serve/test_engine_exactness.py tests/common/test_energy.py --junitxml "$WORK/tests.xml" 2>&1 | tail -25
tests_rc=${PIPESTATUS[0]}
set -e
tests_s=$(( $(date +%s) - start ))

"$PY" - "$WORK/bench.json" "$WORK/tests.xml" "$RESULT" "$tests_rc" "$bench_s" "$tests_s" "$MODE" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
bench, xml, out, rc, bench_s, tests_s, mode = sys.argv[1:]
result = json.load(open(bench))
cases = []
try:
    for case in ET.parse(xml).iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
except (OSError, ET.ParseError):
    pass
result["gpu_tests"] = {"exit_code": int(rc), "cases": cases,
                       "passed": sum(c["outcome"] == "passed" for c in cases),
                       "failed": sum(c["outcome"] in ("failed", "error") for c in cases),
                       "skipped": sum(c["outcome"] == "skipped" for c in cases)}
result["mode"] = "dry-run (CPU, tiny shape)" if mode == "dry" else "gpu"
result["script_s"] = {"bench": int(bench_s), "tests": int(tests_s)}
json.dump(result, open(out, "w"), indent=2)
print(f"wrote {out}: " + json.dumps({k: result[k] for k in ("device_name", "mode", "gpu_tests", "script_s")})
      + "\n" + json.dumps({k: {m: round(v, 3) for m, v in d.items() if m in ("decode_tok_s", "joules_per_token")}
                            for k, d in result["decode"].items()}) + "\nhot load: " + json.dumps(result["hot_load"]))
EOF
