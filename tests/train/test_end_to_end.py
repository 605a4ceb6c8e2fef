"""Data (offline) -> train run (a few steps, tiny model) -> adapter dir with manifest and energy report ->
served by a live kit server, where it changes the answers (OpenAI API, temperature 0) -> train report."""

import csv
import json

import pytest

from common.manifest import read_losses, read_manifest
from common.models import model_fingerprint
from tests.train.conftest import cli


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory, tiny_model, offline_dataset):
    import yaml

    root = tmp_path_factory.mktemp("e2e")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny-support", "model": str(tiny_model), "data": str(offline_dataset), "max_steps": 4,
        "batch_size": 4, "eval_steps": 2, "save_steps": 4, "logging_steps": 1, "max_val_examples": 8,
        "max_length": 2048, "r": 8, "alpha": 16, "target_modules": "all", "learning_rate": 2e-2,
    }))
    store = root / "store"
    cli("train", "run", "--config", str(config), "--out", str(store), "--work-dir", str(root / "work"),
        "--no-progress", "seed=7")
    return store


def test_adapter_directory_is_complete(trained_store, tiny_model, offline_dataset):
    adapter = trained_store / "tiny-support"
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json", "emissions.csv", "energy.json",
            "losses.png", "losses.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)  # safetensors only
    assert [p.name for p in trained_store.iterdir()] == ["tiny-support"]  # no staging directory left behind
    assert (adapter / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    m = read_manifest(adapter)
    curves = read_losses(adapter)  # logged every step, evaluated at steps 2 and 4, then once more at the end
    assert [step for step, _ in curves["train"]] == [1, 2, 3, 4] and [s for s, _ in curves["val"]] == [2, 4, 4]
    assert curves["val"][-1][1] == m.metrics.val_loss
    assert m.base_model.name == "tiny-qwen2" and m.base_model.fingerprint == model_fingerprint(tiny_model)
    assert m.lora.r == 8 and m.lora.alpha == 16 and len(m.lora.target_modules) == 7
    assert m.training.steps == 4 and m.training.seed == 7 and m.training.dataset_fingerprint.startswith("sha256:")
    assert m.metrics.val_loss > 0 and m.metrics.perplexity == pytest.approx(2.718281828 ** m.metrics.val_loss, rel=1e-6)
    assert m.system_prompt and "customer-support agent" in m.system_prompt
    assert "{% generation %}" in m.chat_template
    assert m.command.startswith("supportkit train run --config ") and m.command.endswith("seed=7")
    assert m.started_at <= m.finished_at
    assert m.energy.kwh["total"] > 0 and m.energy.sources["total"] in ("rapl", "estimate", "nvml")
    assert m.energy.duration_s > 0 and m.energy.hardware["device"] == "cpu"

    report = json.loads((adapter / "energy.json").read_text())
    assert report["kwh"] == pytest.approx(m.energy.kwh) and report["sources"] == m.energy.sources
    rows = list(csv.DictReader((adapter / "emissions.csv").open()))
    assert rows and float(rows[-1]["energy_consumed"]) > 0 and float(rows[-1]["duration"]) > 0


def test_served_adapter_changes_the_answer(trained_store, tiny_model, server_factory):
    from openai import OpenAI

    srv = server_factory("--model", str(tiny_model), "--adapters", str(trained_store), "--dtype", "float32")
    client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
    listed = {m.id: m for m in client.models.list().data}
    assert "tiny-support" in listed
    assert listed["tiny-support"].model_extra["manifest"]["name"] == "tiny-support"

    messages = [{"role": "user", "content": "My fibre connection drops every evening. What can I do?"}]

    def answer(model: str) -> str:
        out = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16)
        return out.choices[0].message.content

    base = answer("tiny-qwen2")
    assert answer("tiny-qwen2") == base  # deterministic at temperature 0, so a difference means the adapter
    assert answer("tiny-support") != base


def test_train_report_lists_the_run(trained_store, tmp_path):
    proc = cli("train", "report", str(trained_store), "--csv", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json"))
    assert "tiny-support" in proc.stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["name"] == "tiny-support" and rows[0]["val_loss"] > 0 and rows[0]["kwh"] > 0
    assert rows[0]["modules"] == "q,k,v,o,gate,up,down"
    assert next(csv.DictReader((tmp_path / "r.csv").open()))["name"] == "tiny-support"


def test_train_run_bad_input_is_a_clear_error(tmp_path, tiny_model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\nmodel: {tiny_model}\ndata: {tmp_path}/missing.jsonl\n")
    proc = cli("train", "run", "--config", str(cfg), "--out", str(tmp_path / "s"), check=False)
    assert proc.returncode == 2 and "supportkit data generate" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("train", "run", "--config", str(cfg), "--out", str(tmp_path / "s"), "r=abc", check=False)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
