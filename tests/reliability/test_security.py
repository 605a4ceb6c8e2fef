"""Security: secrets never in logs, errors, /info or the API description; CORS closed unless configured;
request size, prompt tokens and max_new_tokens bounded by settings; names cannot leave the store; customer
PII redacted from logs. (Admin token checks, traversal names on the admin API, symlinks out of the store and
pickled weights are in tests/serve/test_bad_input.py.)"""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from common.log_redaction import install_log_redaction
from common.redact import Redactor
from tests.reliability.conftest import SMALL_LIMITS

SECRET = "kit-admin-7f3a9c0e5b1d4e2f8a6c"
WRONG = "guess-0d9e8f7a6b5c4d3e"
EMAIL, PHONE = "jane.doe@example.com", "+33 6 12 34 56 78"


@pytest.fixture(scope="module")
def secret_server(server_factory, serve_args):
    return server_factory(*serve_args, "--log-level", "debug", env={
        **SMALL_LIMITS, "SUPPORTKIT_ADMIN_TOKEN": SECRET, "SUPPORTKIT_SERVE_CORS_ORIGINS": '["https://ops.example"]',
        "SUPPORTKIT_SERVE_MAX_REQUEST_BYTES": "4000", "SUPPORTKIT_SERVE_MAX_INPUT_TOKENS": "64",
    })


def test_admin_token_never_leaks(secret_server):
    url = secret_server.url
    good, bad = {"Authorization": f"Bearer {SECRET}"}, {"Authorization": f"Bearer {WRONG}"}
    responses = [
        httpx.get(url + "/admin/adapters", headers=good), httpx.post(url + "/admin/adapters/support-a", headers=good),
        httpx.get(url + "/admin/adapters", headers=bad), httpx.delete(url + "/admin/adapters/nope", headers=good),
        httpx.post(url + "/admin/adapters/missing", headers=good), httpx.get(url + "/info"),
        httpx.get(url + "/openapi.json"), httpx.get(url + "/metrics"), httpx.get(url + "/v1/models"),
        httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"temperature": -1}}, headers=good),
        httpx.post(url + "/v1/chat/completions", content=b"{broken", headers={**good, "content-type": "application/json"}),
        httpx.post(url + "/v1/chat/completions", json={"model": "support-a", "messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 4}, headers=good),
    ]
    assert [r.status_code for r in responses[:3]] == [200, 201, 401]
    for r in responses:
        seen = r.text + json.dumps(dict(r.headers))
        assert SECRET not in seen and WRONG not in seen, (r.request.url, seen[:500])
    info = responses[5].json()
    assert not any(str(v).startswith("/") for v in info.values()), info  # no file-system paths either
    assert "/tmp" not in responses[4].text and "/tmp" not in responses[3].text  # nor in errors
    log = secret_server.log.read_text()
    assert "Authorization" not in log or SECRET not in log
    assert SECRET not in log and WRONG not in log


def test_cors_closed_by_default(live_server):
    preflight = httpx.options(live_server.url + "/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    simple = httpx.get(live_server.url + "/v1/models", headers={"Origin": "https://evil.example"})
    for r in (preflight, simple):
        assert not any(h.lower().startswith("access-control-") for h in r.headers), dict(r.headers)


def test_cors_allows_only_configured_origins(secret_server):
    for origin, allowed in (("https://evil.example", False), ("https://ops.example", True)):
        r = httpx.options(secret_server.url + "/v1/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert (r.headers.get("access-control-allow-origin") == origin) is allowed, dict(r.headers)
        assert "*" not in r.headers.get("access-control-allow-origin", "")


def test_limits_follow_the_settings(secret_server):
    url = secret_server.url
    big = {"inputs": "x " * 2500}
    assert httpx.post(url + "/generate", json=big).status_code == 413

    def chunks():  # no Content-Length: the limit must hold on the bytes actually read
        for _ in range(10):
            yield b" " * 1000
        yield b'{"inputs": "hi"}'

    r = httpx.post(url + "/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"], r.text
    long_prompt = "router " * 100  # > 64 tokens, < 4000 bytes
    r = httpx.post(url + "/generate", json={"inputs": long_prompt, "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 422 and "64" in r.json()["error"]
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 2})
    assert r.status_code == 400 and "64" in r.json()["error"]["message"]
    r = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 9}})
    assert r.status_code == 422 and "<= 8" in r.json()["error"]
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    assert r.status_code == 400 and "<= 8" in r.json()["error"]["message"]
    r = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 8}})
    assert r.status_code == 200


@pytest.mark.parametrize("adapter", [
    "../support-a", "/etc/passwd", "support-a/../support-b", "%2E%2E%2Fsupport-a", "..\\support-a", "support-a\x00",
])
def test_adapter_ids_cannot_leave_the_store(live_server, adapter):
    r = httpx.post(live_server.url + "/generate", json={"inputs": "hi", "parameters": {"adapter_id": adapter, "max_new_tokens": 2}})
    assert r.status_code == 404 and r.json()["error_type"] == "adapter_not_found", r.text  # never read from disk


@pytest.mark.parametrize("path,error", [
    ("/adapters/..%2F..%2Fetc%2Fpasswd/generate", "not_found"),  # slashes in the name: no route matches
    ("/adapters/%2Fetc%2Fpasswd", "not_found"),
    ("/adapters/%252e%252e/generate", "adapter_not_found"),  # the name '%2e%2e' reaches the kit: not loaded
    ("/adapters/%2e%2e/v1/chat/completions", "model_not_found"),  # '..' on an OpenAI route: OpenAI's error
])
def test_encoded_adapter_paths_cannot_leave_the_store(live_server, path, error):
    body = {"inputs": "hi", "messages": [{"role": "user", "content": "hi"}], "parameters": {"max_new_tokens": 2}}
    r = httpx.post(live_server.url + path, json=body)
    assert r.status_code == 404, (path, r.status_code, r.text)
    body = r.json()
    assert (body["error"]["code"] if isinstance(body["error"], dict) else body["error_type"]) == error, r.text
    assert "root:" not in r.text


def test_customer_pii_is_redacted_from_the_server_log(secret_server):
    httpx.get(secret_server.url + "/v1/models", params={"email": EMAIL, "phone": PHONE})
    httpx.post(secret_server.url + f"/adapters/{EMAIL}/generate", json={"inputs": "hi"})
    log = secret_server.log.read_text()
    assert "/v1/models?" in log and "[EMAIL]" in log  # the access log lines are there, redacted
    assert EMAIL not in log and "jane.doe%40example.com" not in log.lower()
    assert "Logging error" not in log  # formatters still find the arguments they expect
    assert "612345678" not in log.replace(" ", "").replace("%20", "").replace("+", "")


@pytest.fixture
def restore_record_factory():
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_log_redaction_covers_arguments_and_tracebacks(restore_record_factory):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("tests.reliability.redaction")
    logger.addHandler(handler := Keep())
    logger.propagate = False
    try:
        install_log_redaction(Redactor())
        install_log_redaction(Redactor())  # idempotent: one layer of redaction, not two
        logger.warning("customer %s called from %s about account 12345678", EMAIL, PHONE)
        try:
            raise ValueError(f"cannot format a message from {EMAIL}")
        except ValueError:
            logger.exception("turn failed")
        logger.warning("router model AX55 at 100 Mbit/s, order 2024-117")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert EMAIL not in text and "12 34 56 78" not in text, text
    assert text.count("[EMAIL]") == 2 and "[PHONE]" in text and "ValueError" in text
    assert "router model AX55 at 100 Mbit/s, order 2024-117" in text  # ordinary numbers survive
