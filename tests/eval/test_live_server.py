"""End to end against a real kit server on loopback (tiny Qwen2 + adapters support-a, support-b).

Judges: the reference judge, the kit server's own base model as an LLM judge (a random tiny model: its verdicts
are garbage, which exercises the malformed-verdict path), and the scripted judge (a stand-in for a hosted judge
API, which the tests cannot reach) for well-formed verdicts.
"""

from __future__ import annotations

import json

from common.journal import read_records
from common.manifest import AdapterManifest, Energy, Metrics, write_manifest
from eval.job import run_job
from eval.settings import EvalSettings
from tests.eval.test_job_scripted import EXPECTED_FILES

QUESTIONS = 2


def manifest_store(tmp_path):
    """Manifests for the served adapters, given with --adapters (the shared fixture store has none)."""
    store = tmp_path / "manifests"
    for name, loss, kwh in (("support-a", 0.52, 0.30), ("support-b", 0.68, 0.12)):
        (store / name).mkdir(parents=True)
        write_manifest(store / name, AdapterManifest(name=name, metrics=Metrics(val_loss=loss),
                                                     energy=Energy(kwh={"total": kwh}, sources={"total": "estimate"})))
    return store


def test_eval_job_against_the_kit_server(live_server, scripted_factory, tmp_path):
    scripted = scripted_factory()
    panel = tmp_path / "panel.yaml"
    panel.write_text(f"""
anchor: base
bootstrap: 50
decoding: {{max_tokens: 24, temperature: 0, seed: 0}}
judges:
  - name: reference
    kind: reference
  - name: kit-llm
    kind: llm
    url: {live_server.url}
    protocols: [rubric, pairwise]
    max_tokens: 24
    parse_retries: 1
    structured: false   # unconstrained: the malformed-verdict path (test_structured_output has the constrained one)
  - name: hosted-standin
    kind: llm
    url: {scripted.url}
    model: judge
""")
    out = tmp_path / "out"
    settings = EvalSettings.from_cli(endpoint=live_server.url, panel=panel, out=out, limit=QUESTIONS,
                                     adapters=manifest_store(tmp_path))
    run_job(settings, log=lambda _: None)
    for name in EXPECTED_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    answers = read_records(out / "answers.jsonl")
    assert len(answers) == 3 * QUESTIONS
    assert {a["target"] for a in answers} == {"support-a", "support-b", json.loads((out / "run.json").read_text())["anchor"]}
    assert all(a["completion_tokens"] and a["energy_source"] in ("nvml", "rapl", "estimate", "unknown") for a in answers)

    judgments = read_records(out / "judgments.jsonl")
    kit = [j for j in judgments if j["judge"] == "kit-llm"]
    # rubric: 3 targets x 2 questions; pairwise: 2 adapters x 2 questions x 2 orders
    assert len(kit) == 3 * QUESTIONS + 2 * QUESTIONS * 2
    for j in kit:  # 24 tokens from random weights hold no verdict: each one is missing (asked twice), never a score
        assert j["status"] == "missing", j
        assert j.get("scores") is None and j.get("winner") is None and j["attempts"] == 2
    assert all(j["status"] == "ok" for j in judgments if j["judge"] == "hosted-standin")
    assert sum(j["judge"] == "reference" for j in judgments) == 3 * QUESTIONS

    ranking = json.loads((out / "ranking.json").read_text())
    assert sorted(t["rank"] for t in ranking["targets"]) == [1, 2, 3]
    assert all(t["ci"] is not None for t in ranking["targets"])
    by_name = {t["name"]: t for t in ranking["targets"]}
    assert by_name["support-a"]["val_loss"] == 0.52 and by_name["support-b"]["train_kwh"] == 0.12
    assert ranking["val_loss_correlation"]["targets"] == 2
    assert ranking["judges"]["kit-llm"]["model"] == ranking["run"]["targets"][0]["name"]  # the base model
    assert ranking["judges"]["kit-llm"]["missing"] == sum(j["status"] == "missing" for j in kit)


def test_tgi_route_against_the_kit_server(live_server, tmp_path):
    from eval.clients import TGIChat

    chat = TGIChat(live_server.url)
    messages = [{"role": "user", "content": "My router light is red."}]
    a = chat.complete("support-a", messages, max_tokens=8, temperature=0, seed=0)
    again = chat.complete("support-a", messages, max_tokens=8, temperature=0, seed=0)
    assert a.text == again.text and a.completion_tokens and a.energy_source is not None
