"""Panel files: the shipped one validates, environment expansion, clear errors; prompts filled in one pass."""

import pytest

from eval.llm_judge import fill
from eval.panel import CONFIGS, PanelError, load_panel


def test_shipped_panel_defaults_to_the_kit_server(monkeypatch):
    monkeypatch.delenv("SUPPORTKIT_JUDGE_URL", raising=False)
    monkeypatch.delenv("SUPPORTKIT_JUDGE_MODEL", raising=False)
    panel = load_panel(CONFIGS / "panel-local.yaml")
    reference, llm = panel.judges
    assert reference.kind == "reference" and reference.method == "embedding"
    assert llm.url == "http://127.0.0.1:8000" and llm.model is None and set(llm.protocols) == {"rubric", "pairwise"}
    assert "{{answer}}" in panel.prompt(llm.rubric_prompt) and "{{answer_b}}" in panel.prompt(llm.pairwise_prompt)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SUPPORTKIT_JUDGE_URL", "http://judge:9000")
    monkeypatch.setenv("SUPPORTKIT_JUDGE_MODEL", "qwen-7b")
    monkeypatch.setenv("SUPPORTKIT_JUDGE_API_KEY", "sk-test")
    llm = load_panel(CONFIGS / "panel-local.yaml").judges[1]
    assert (llm.url, llm.model, llm.api_key()) == ("http://judge:9000", "qwen-7b", "sk-test")


def test_defaults_given_by_the_caller_fill_what_the_environment_leaves_unset(monkeypatch):
    """How the study points the shipped panels at its own server without touching the environment."""
    monkeypatch.delenv("SUPPORTKIT_JUDGE_URL", raising=False)
    monkeypatch.setenv("SUPPORTKIT_JUDGE_MODEL", "qwen-7b")
    defaults = {"SUPPORTKIT_JUDGE_URL": "http://127.0.0.1:4321", "SUPPORTKIT_JUDGE_MODEL": "ignored"}
    llm = load_panel(CONFIGS / "panel-local.yaml", defaults).judges[1]
    assert (llm.url, llm.model) == ("http://127.0.0.1:4321", "qwen-7b")
    monkeypatch.setenv("SUPPORTKIT_JUDGE_URL", "http://judge:9000")
    assert load_panel(CONFIGS / "panel-local.yaml", defaults).judges[1].url == "http://judge:9000"


@pytest.mark.parametrize("text, message", [
    ("judges: [", "not valid YAML"),
    ("judges: []", "at least one judge"),
    ("judges: [{name: x, kind: llm}]", "needs a `url`"),
    ("judges: [{name: x, kind: reference, colour: red}]", "colour"),
    ("judges: [{name: x, kind: llm, url: 'http://h', rubric_prompt: nope.md}]", "prompt not found"),
    ("judges: [{name: x, kind: reference}, {name: x, kind: reference}]", "unique"),
])
def test_bad_panels_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "panel.yaml"
    path.write_text(text)
    with pytest.raises(PanelError, match=message):
        load_panel(path)


def test_fill_does_not_substitute_inside_answers():
    out = fill("Q: {{question}} A: {{answer}} R: {{reference}}", question="q", answer="{{reference}}", reference="secret")
    assert out == "Q: q A: {{reference}} R: secret"
