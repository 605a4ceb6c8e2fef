"""The demo page through `gradio_client` against a real kit server: streaming, compare mode, errors, hand-off."""

import httpx
import pytest
from gradio_client import Client

QUESTION = "My fibre box shows a red light since this morning. What can I check?"


@pytest.fixture(scope="module")
def demo_server(server_factory, tiny_model, adapter_store, tmp_path_factory):
    db = tmp_path_factory.mktemp("feedback") / "feedback.db"
    return server_factory("--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32",
                          env={"SUPPORTKIT_SERVE_FEEDBACK_DB": str(db)})


@pytest.fixture
def client(demo_server):
    return Client(demo_server.url + "/demo/", verbose=False)


def reply_text(message: dict) -> str:
    """The reply as the model wrote it: the chat message without the metrics footer under it."""
    content = message["content"]
    text = content[0]["text"] if isinstance(content, list) else content
    return text.split("\n\n<div class='reply-")[0]  # the sources and metrics under the reply


def send(client, text, model_a, compare=False, model_b="", max_tokens=16):
    job = client.submit(text, model_a, compare, model_b, max_tokens, 0, api_name="/send")
    updates = list(job)
    return updates, job.result()


def test_send_streams_the_reply_of_the_chosen_adapter(client, demo_server):
    updates, (chat_a, chat_b, box, notice) = send(client, QUESTION, "support-b")
    assert box == "" and chat_b == []
    assert [m["role"] for m in chat_a] == ["user", "assistant"]
    final = chat_a[-1]["content"][0]["text"]
    for label in ("latency", "first token", "tokens", "energy", "estimate"):
        assert label in final
    # Streaming: the reply grew over several updates before its metrics arrived.
    partial = [u[0][-1] for u in updates if len(u[0]) == 2 and "reply-metrics" not in str(u[0][-1]["content"])]
    assert len(partial) >= 3
    # Same service as the HTTP API: the greedy reply equals the OpenAI route's for the same conversation.
    api = httpx.post(demo_server.url + "/v1/chat/completions", timeout=60, json={
        "model": "support-b", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16, "temperature": 0})
    assert reply_text(chat_a[-1]) == api.json()["choices"][0]["message"]["content"]


def test_conversation_continues_in_the_same_session(client):
    send(client, QUESTION, "support-a")
    _, (chat_a, _, _, _) = send(client, "And if that does not help?", "support-a")
    assert [m["role"] for m in chat_a] == ["user", "assistant", "user", "assistant"]


def test_compare_mode_answers_the_same_question_with_two_models(client):
    _, (chat_a, chat_b, _, _) = send(client, QUESTION, "tiny-qwen2", compare=True, model_b="support-a")
    assert chat_a[0]["content"][0]["text"] == chat_b[0]["content"][0]["text"] == QUESTION
    assert "reply-metrics" in str(chat_a[-1]) and "reply-metrics" in str(chat_b[-1])
    assert reply_text(chat_a[-1]) != reply_text(chat_b[-1])


def test_unloaded_adapter_is_a_clear_message_and_keeps_the_question(client):
    _, (chat_a, _, box, notice) = send(client, QUESTION, "support-gone")
    assert "support-gone" in notice["value"] and "not loaded" in notice["value"] and notice["visible"]
    assert "Traceback" not in notice["value"]
    assert chat_a == [] and box == QUESTION


def test_empty_message_is_refused(client):
    _, (chat_a, _, _, notice) = send(client, "   ", "support-a")
    assert chat_a == [] and "Type a question" in notice["value"]


def test_handoff_flagged_in_demo_openai_tgi_and_metric(client, demo_server):
    person = "This is the third outage this week. I want to talk to a real person."
    _, (chat_a, _, _, _) = send(client, person, "support-a")
    assert "Hand-off to a human" in str(chat_a[-1])

    def count():
        text = httpx.get(demo_server.url + "/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("supportkit_handoffs_total"))

    before = count()
    oai = httpx.post(demo_server.url + "/v1/chat/completions", timeout=60, json={
        "model": "support-a", "messages": [{"role": "user", "content": person}], "max_tokens": 4}).json()
    assert oai["handoff"]["flagged"] is True and oai["handoff"]["reason"] == "customer_request"
    calm = httpx.post(demo_server.url + "/v1/chat/completions", timeout=60, json={
        "model": "support-a", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}).json()
    assert calm["handoff"] == {"flagged": False, "reason": None, "phrase": None, "language": None}
    prompt = f"<start_of_turn>user\nJe veux parler à un conseiller, s'il vous plaît.<end_of_turn>\n<start_of_turn>model\n"
    tgi = httpx.post(demo_server.url + "/generate", timeout=60, json={
        "inputs": prompt, "parameters": {"adapter_id": "support-b", "max_new_tokens": 4, "details": True}}).json()
    assert tgi["details"]["handoff"]["flagged"] is True and tgi["details"]["handoff"]["language"] == "fr"
    with httpx.stream("POST", demo_server.url + "/generate_stream", timeout=60, json={
            "inputs": prompt, "parameters": {"max_new_tokens": 3}}) as r:
        last = [line for line in r.iter_lines() if line.startswith("data:")][-1]
    assert '"handoff": {"flagged": true' in last.replace(":true", ": true") or '"flagged":true' in last
    assert count() == before + 3


def test_page_works_under_a_path_prefix(server_factory, tiny_model, adapter_store, tmp_path):
    srv = server_factory("--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32",
                         env={"SUPPORTKIT_SERVE_ROOT_PATH": "/kit", "SUPPORTKIT_SERVE_FEEDBACK_DB": str(tmp_path / "f.db")})
    # A proxy that strips /kit: requests arrive as /demo/..., and the page's own URLs carry the prefix.
    config = httpx.get(srv.url + "/demo/config", timeout=30).json()
    assert config["root"] == srv.url + "/kit/demo"
    # A proxy that keeps it: the whole page works under /kit/demo, streaming included.
    client = Client(srv.url + "/kit/demo/", verbose=False)
    _, (chat_a, _, _, _) = send(client, QUESTION, "support-a", max_tokens=8)
    assert "reply-metrics" in str(chat_a[-1])
    assert httpx.get(srv.url + "/kit/health").status_code == 200
