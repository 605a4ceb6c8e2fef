"""Build both images offline (scripts/build-images.sh) and run them as a cluster would: read-only root,
non-root user, model and adapters from volumes. Serve answers /health, /metrics and a chat request on a
tiny model over loopback; the train image runs a few LoRA steps and publishes an adapter."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

# The first test builds the images (cached between runs; a cold build takes minutes).
pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("TAG", "test")
# podman on the build script's own image store (its storage driver, runc, cgroupfs).
PODMAN = ["bash", str(ROOT / "scripts" / "build-images.sh"), "podman"]
# No tmpfs for /cache or /data: the images' own anonymous volumes must keep them writable under --read-only.
RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--read-only", "--user", "10001:10001",
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "TAG": TAG})
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    missing = [t for t in ("buildah", "podman", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make tools installs them)")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh"), "all"], capture_output=True,
                          text=True, timeout=1500, env={**os.environ, "TAG": TAG})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {name: f"localhost/supportkit-{name}:{TAG}" for name in ("serve", "train")}


@pytest.fixture(scope="module")
def volumes(tiny_model, adapter_store):
    """World-readable copies of the tiny model and adapters (pytest's own tmp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="supportkit-volumes-"))
    shutil.copytree(tiny_model, base / "model")
    shutil.copytree(adapter_store, base / "adapters")
    (base / "out").mkdir()
    for p in [base, *base.rglob("*")]:
        p.chmod(0o777 if p.name == "out" else (0o755 if p.is_dir() else 0o644))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_container(images, volumes):
    name, port = f"supportkit-serve-test-{os.getpid()}", free_port()
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--network", "host", *RUN_FLAGS,
           "-v", f"{volumes / 'model'}:/models/base:ro", "-v", f"{volumes / 'adapters'}:/adapters:ro",
           "-e", f"SUPPORTKIT_SERVE_PORT={port}",
           images["serve"], "--dtype", "float32", "--host", "127.0.0.1", timeout=600)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", "serve container exited:\n" + podman("logs", name, check=False).stderr[-4000:]
            try:
                if httpx.get(url + "/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not healthy in time:\n" + podman("logs", name, check=False).stderr[-4000:]
            time.sleep(1)
        yield name, url
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


def test_serve_answers_health_chat_and_metrics(serve_container):
    _, url = serve_container
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    models = {m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]}
    assert {"support-a", "support-b"} <= models
    r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": "support-a", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "My router shows a red light."}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] > 0
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'supportkit_requests_total{adapter="support-a",outcome="success"} 1.0' in metrics


def test_serve_runs_as_non_root_on_a_read_only_root(serve_container):
    name, _ = serve_container
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    wrote = podman("exec", name, "sh", "-c", "touch /opt/venv/probe", check=False)
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr
    # The wheel directory was mounted into the install steps, never copied: the image carries none of it.
    assert podman("exec", name, "test", "-e", "/wheels", check=False).returncode != 0
    # The image's HEALTHCHECK (python urllib, no curl) passes against the running server.
    health = podman("healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr


def test_image_metadata(images):
    cfg = json.loads(podman("image", "inspect", images["serve"]).stdout)[0]
    labels = cfg["Config"]["Labels"] if "Config" in cfg else cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "supportkit-serve"
    assert cfg["Config"]["User"] == "10001:10001"
    assert cfg["Config"]["Entrypoint"] == ["supportkit", "serve"]
    assert "SUPPORTKIT_SERVE_MODEL=/models/base" in cfg["Config"]["Env"]
    train = json.loads(podman("image", "inspect", images["train"]).stdout)[0]
    assert train["Config"]["Entrypoint"] == ["supportkit", "train", "run"]


def test_train_image_runs_a_few_steps(images, volumes):
    proc = podman("run", "--rm", "--network", "none", *RUN_FLAGS,
                  "-v", f"{volumes / 'model'}:/models/base:ro", "-v", f"{volumes / 'out'}:/adapters",
                  images["train"], "--config", "/opt/supportkit/configs/train/sweep.yaml", "--index", "0",
                  "--out", "/adapters", "--no-progress",
                  "model=/models/base", "max_steps=3", "offline_scenarios=40", "max_val_examples=4",
                  "batch_size=2", "grad_accum=1", "eval_steps=3", "save_steps=3", "max_length=1024",
                  timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    adapter = volumes / "out" / "r16-qv"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["training"]["steps"] == 3
    assert manifest["lora"]["r"] == 16 and manifest["base_model"]["name"]
    # The energy report says where each figure came from (no RAPL/NVML in this container: an estimate).
    assert manifest["energy"]["kwh"] and set(manifest["energy"]["sources"].values()) <= {"nvml", "rapl", "estimate"}
