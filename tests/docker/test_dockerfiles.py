"""Static checks of both Dockerfiles: hadolint, and the structure operators rely on."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"serve": ROOT / "Dockerfile.serve", "train": ROOT / "Dockerfile.train"}


@pytest.fixture(scope="session")
def tools() -> Path:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install-tools.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ROOT / ".tools"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(tools, name):
    proc = subprocess.run([str(tools / "venv" / "bin" / "hadolint"), str(DOCKERFILES[name])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_can_fail(tools, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    proc = subprocess.run([str(tools / "venv" / "bin" / "hadolint"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


@pytest.mark.parametrize("name, entrypoint", [("serve", '["supportkit", "serve"]'), ("train", '["supportkit", "train", "run"]')])
def test_structure(name, entrypoint):
    ins = instructions(DOCKERFILES[name])
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    stages = {f.split(" AS ")[1].strip() for f in froms if " AS " in f}
    assert all(f.split()[0] == "${BASE_IMAGE}" or f.split()[0] in stages for f in froms)
    assert froms[-1] == "deps"  # the runtime stage builds on the dependencies' stage: no venv copied again
    args = {a.split("=")[0] for i, a in ins if i == "ARG"}
    assert "PIP_ARGS" in args
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "${PIP_ARGS}" in runs and '"${TORCH_SPEC}"' in runs
    assert "ARG TORCH_SPEC=torch==2.13.0" in DOCKERFILES[name].read_text()
    # torch is installed alone, before the other dependencies and the kit.
    assert runs.index('"${TORCH_SPEC}"') < runs.index("-r /tmp/requirements.txt") < runs.index("--no-deps --target /opt/kit .")
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM"):]
    users = [a for i, a in final if i == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert ("ENTRYPOINT", entrypoint) in final
    labels = " ".join(a for i, a in final if i == "LABEL")
    for key in ("title", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    text = DOCKERFILES[name].read_text()
    # The offline path: a wheel directory, --no-index --find-links, mounted into every step that installs
    # and copied into none, so that no layer of the runtime stage carries the wheels.
    pip_runs = [a for i, a in ins if i == "RUN" and "pip install" in a]
    assert len(pip_runs) == 3 and all(a.startswith("--mount=type=bind,source=.whl,target=/wheels ") for a in pip_runs)
    assert not [a for i, a in ins if i == "COPY" and ".whl" in a]
    assert not re.search(r"(?i)(token|password|api_key)\s*=", text), "no secrets baked in"
    # The model and the adapters come from volumes: nothing copies them in, and caches point at volumes.
    assert not [a for i, a in ins if i == "COPY" and ("models" in a or "adapters" in a)]
    assert "SUPPORTKIT_CACHE=/cache" in text and "HF_HUB_OFFLINE=1" in text


def test_serve_healthcheck_uses_python_not_curl():
    final_hc = [a for i, a in instructions(DOCKERFILES["serve"]) if i == "HEALTHCHECK"]
    assert len(final_hc) == 1
    assert "urllib.request" in final_hc[0] and "/health" in final_hc[0] and "curl" not in final_hc[0]
    text = DOCKERFILES["serve"].read_text()
    assert "SUPPORTKIT_SERVE_MODEL=/models/base" in text and "SUPPORTKIT_SERVE_ADAPTERS=/adapters" in text
    assert "SUPPORTKIT_CACHE=/cache" in text


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".tools", "tests"} <= ignored
    assert ".whl" not in ignored
