"""Both engines implement the one Engine interface, and share prompt rendering and length checks."""

from __future__ import annotations

import pytest

from serve.engine.interface import Engine
from serve.engine.prompts import check_lengths
from serve.engine.remote_backends import BACKENDS, LoRAXBackend, TGIBackend, VLLMBackend
from serve.engine.types import SamplingParams
from serve.errors import InvalidRequest


def test_both_engines_are_engines(tiny_model):
    from serve.engine.local import LocalEngine
    from serve.engine.remote import RemoteEngine

    local = LocalEngine(tiny_model, dtype="float32")
    remote = RemoteEngine(tiny_model, "vllm", "http://127.0.0.1:9/v1")
    try:
        assert isinstance(local, Engine) and isinstance(remote, Engine)
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
        assert local.render_chat(messages) == remote.render_chat(messages)
        assert local.count_tokens("hello there") == remote.count_tokens("hello there") > 0
    finally:
        remote.stop()


def test_one_backend_class_per_remote_kind():
    assert BACKENDS == {"tgi": TGIBackend, "lorax": LoRAXBackend, "vllm": VLLMBackend}


@pytest.mark.parametrize("n, new, param", [(0, 1, "inputs"), (11, 1, "inputs"), (10, 11, "max_new_tokens")])
def test_length_checks(n, new, param):
    with pytest.raises(InvalidRequest) as err:
        check_lengths(n, SamplingParams(max_new_tokens=new), max_input_tokens=10, max_total_tokens=20)
    assert err.value.param == param


def test_remote_control_calls_retry_then_say_unavailable(tiny_model):
    """GETs to the remote follow common.http's policy: a 503 is retried, and what still fails is Unavailable."""
    import httpx

    from serve.engine.remote import RemoteEngine
    from serve.errors import Unavailable

    calls = []

    def handler(request):
        calls.append(request.url.path)
        return httpx.Response(503, json={"error": "loading", "error_type": "unavailable"})

    engine = RemoteEngine(tiny_model, "tgi", "http://remote.test")
    engine.http = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(Unavailable):
        engine._get("http://remote.test/info", attempts=2)
    assert calls == ["/info", "/info"]


def test_submit_refuses_at_once_and_the_loop_enforces_the_deadline(tiny_model):
    """submit() raises its refusal synchronously; a request past its deadline is dropped by the engine loop
    (a Timeout for the caller, "cancelled" for the metrics) and its row freed."""
    import asyncio

    from serve.engine.local import LocalEngine
    from serve.engine.types import GenerationRequest
    from serve.errors import AdapterNotFound, Timeout

    engine = LocalEngine(tiny_model, dtype="float32")
    finished = []
    engine.on_finish = finished.append
    engine.start()
    try:
        async def scenario():
            with pytest.raises(AdapterNotFound):
                engine.submit(GenerationRequest("hello", "nope"))
            long = GenerationRequest("hello", None, SamplingParams(max_new_tokens=3000, ignore_eos=True))
            with pytest.raises(Timeout, match="within 0.3 s"):
                await engine.generate(long, timeout_s=0.3)

        asyncio.run(scenario())
        assert [r.finish_reason for r in finished] == ["cancelled"]
        assert 0 < finished[0].generated_tokens < 3000
        assert engine.stats()["batch_size"] == 0
    finally:
        engine.stop()
