"""The knowledge base: formats, refusals with a clear message, retrieval with the shipped MiniLM, one rendering."""

import json

import pytest

from common.knowledge import (HEADER, Entry, KnowledgeError, Retriever, ground, load_knowledge, render_system,
                              retrieval_query)


@pytest.fixture(scope="module")
def kit():
    return load_knowledge()


@pytest.fixture(scope="module")
def retriever(kit, tmp_path_factory):
    return Retriever(kit, k=2, cache_dir=tmp_path_factory.mktemp("kb-cache"))


def test_the_glossary_is_the_default_knowledge_base(kit):
    assert len(kit.entries) == 52 and kit.source == "kit glossary"
    porting = kit.by_id("porting")
    assert porting.title == "number porting" and "porting code" in porting.text  # definition + its answer
    assert kit.fingerprint == load_knowledge().fingerprint and kit.fingerprint.startswith("sha256:")


def test_a_folder_of_yaml_jsonl_and_markdown_entries(tmp_path):
    (tmp_path / "plans.yaml").write_text("entries:\n  - id: plan-s\n    title: Plan S\n    text: 20 GB of data a month.\n")
    (tmp_path / "faq.jsonl").write_text(json.dumps({"id": "pac", "title": "PAC", "text": "Ask for it by SMS.",
                                                    "tags": ["porting"]}) + "\n\n")
    (tmp_path / "esim.md").write_text("---\ntitle: eSIM swap\nexamples: [new phone eSIM]\n---\nOrder a new QR code.\n")
    (tmp_path / "roaming-eu.md").write_text("# Roaming in the EU\n\nSame prices as at home.\n")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    kb = load_knowledge(tmp_path)
    assert [e.id for e in kb.entries] == ["esim", "pac", "plan-s", "roaming-eu"]  # sorted file names, hidden skipped
    assert kb.by_id("esim").examples == ["new phone eSIM"] and kb.by_id("roaming-eu").title == "Roaming in the EU"
    assert kb.by_id("roaming-eu").text == "Same prices as at home."


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"id": "x", "title": "X"}\n', r"bad.jsonl:1: entry 'x': text: Field required"),
    ("bad.jsonl", '{"id": "ok", "title": "X", "text": "t"}\nnot json\n', r"bad.jsonl:2 is not valid JSON"),
    ("bad.yaml", "- id: 'has space'\n  title: X\n  text: t\n", r"bad.yaml \(entry 1\): entry 'has space': id"),
    ("bad.yaml", "- id: a\n  title: X\n  text: t\n  colour: red\n", r"colour: Extra inputs are not permitted"),
    ("bad.yaml", "key: [unclosed", r"bad.yaml is not valid YAML"),
    ("dupes.yaml", "- {id: a, title: A, text: t}\n- {id: a, title: B, text: u}\n", r"duplicate entry ids: a"),
])
def test_a_malformed_entry_is_refused_with_where_and_what(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(tmp_path)


def test_an_empty_or_missing_knowledge_base_is_refused(tmp_path):
    with pytest.raises(KnowledgeError, match="has no entries"):
        load_knowledge(tmp_path)
    with pytest.raises(KnowledgeError, match="does not exist"):
        load_knowledge(tmp_path / "nowhere")


@pytest.mark.parametrize("question, entry", [
    ("How do I keep my phone number when I move to your network?", "porting"),
    ("I'm abroad in Spain and my phone shows no mobile data", "roaming"),
    ("the LOS light on my fibre box is blinking red", "ont"),
    ("How do I activate my eSIM on a new iPhone?", "esim"),
    ("What does APN mean?", "apn"),
    ("My phone is asking for a PUK code", "pin_puk"),
    ("My video calls freeze and my voice sounds robotic", "jitter"),
    ("How much data do I have left this month?", "data_allowance"),
])
def test_known_questions_retrieve_their_entry_in_the_top_k(retriever, question, entry):
    assert entry in [e.id for e in retriever.search(question)]


def test_the_index_is_cached_by_fingerprint(kit, retriever):
    retriever.index()
    cached = list(retriever.cache_dir.glob("*.npy"))
    assert len(cached) == 1 and kit.fingerprint.split(":")[1] in cached[0].name
    again = Retriever(kit, 2, retriever.cache_dir)
    assert (again.index() == retriever.index()).all()


def test_one_fixed_rendering_after_the_system_prompt():
    entries = [Entry(id="a", title="Alpha", text="First  line.\nSecond."), Entry(id="b", title="Beta", text="B.")]
    assert render_system("Be helpful.", entries) == (
        "Be helpful.\n\nKnowledge base:\n[a] Alpha: First line. Second.\n[b] Beta: B.")
    assert render_system("Be helpful.", []) == "Be helpful."
    assert HEADER == "Knowledge base:"


def test_ground_searches_the_customer_turns_before_the_reply(retriever):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "My phone asks for a PUK code"},
                {"role": "assistant", "content": "Which phone?"}, {"role": "user", "content": "An old one."},
                {"role": "assistant", "content": "The PUK is on the SIM card holder."}]
    assert retrieval_query(messages) == "My phone asks for a PUK code\nAn old one."
    grounded, entries = ground(messages, retriever)
    assert "pin_puk" in [e.id for e in entries]
    assert grounded[0]["content"] == render_system("S", entries) and grounded[1:] == messages[1:]
