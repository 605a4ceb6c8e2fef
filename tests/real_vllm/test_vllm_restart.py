"""A real vLLM killed mid-stream (its whole process group, as a dying pod): the front's stream ends with a clean
error, requests get 503 while vLLM is down, and when it is back on its port the front recovers by itself and
offers it again the adapters it had loaded at run time (a restarted vLLM forgets them). Last in the tier: it
costs a vLLM start-up."""

from __future__ import annotations

import pytest

from tests.real_vllm.conftest import BASE
from tests.serve import test_remote_engine as remote

pytestmark = pytest.mark.vllm


def test_vllm_killed_mid_stream_then_recovers(front, vllm_server):
    assert "support-b" in vllm_server.models()
    before = remote.oai(front).chat.completions.create(model="support-b", messages=remote.QUESTION, max_tokens=8,
                                                       temperature=0)
    # The remote-engine suite's own recovery test, unchanged: it kills vLLM after three streamed events,
    # checks the error event, the 503s and /health, restarts vLLM on its port, and compares answers.
    remote.test_back_killed_mid_stream_then_recovers(front, vllm_server)
    models = vllm_server.models()
    assert models["support-b"]["parent"] == BASE  # offered again by the front, not by vLLM's own arguments
    after = remote.oai(front).chat.completions.create(model="support-b", messages=remote.QUESTION, max_tokens=8,
                                                      temperature=0)
    assert after.choices[0].message.content == before.choices[0].message.content
