"""The remote engine: a kit server in front of another engine over HTTP.

TGI, LoRAX and vLLM cannot run here, but the kit's own server speaks both of their protocols, so a "back"
kit server (tiny model, two adapters) plays the remote, and "front" kit servers run `--engine tgi` and
`--engine vllm` against it. Real clients (openai, huggingface_hub) get the same answers from the front as
from the back; the front refuses what it does not serve before the back sees it; killing the back
mid-stream gives clean errors, and the front recovers when the back returns on the same port.
"""

from __future__ import annotations

import asyncio
import http.server
import inspect
import json
import shutil
import sys
import threading
import time

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from prometheus_client.parser import text_string_to_metric_families

from common.tiny import build_random_adapter
from serve.engine.remote import RemoteEngine
from serve.engine.remote_energy import CounterEnergy, parse_counter
from serve.engine.remote_protocols import error_from_body, error_from_event
from serve.engine.types import GenerationRequest, SamplingParams
from serve.errors import AdapterInvalid, AdapterNotFound, GenerationFailed, InvalidRequest, Overloaded, Unavailable
from tests.conftest import ADMIN_TOKEN, LiveServer, free_port
from tests.serve import test_clients as core_clients

QUESTION = [{"role": "user", "content": "My 4G data does not work abroad. What can I do?"}]
PROMPT = "Hello, my router shows a red light and"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FRONT_ENV = {"SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN, "SUPPORTKIT_SERVE_ENGINE_HEALTH_INTERVAL_S": "0.3",
             "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": "2000"}  # above the back's 1024: the back's refusal is tested


def start_server(args: list[str], log, port: int | None = None, env: dict | None = None) -> LiveServer:
    """A kit server; `port` pins the port (to bring a stopped back server back where the front expects it)."""
    if port is None:
        return LiveServer(args, env=env, log=log).wait_ready()
    module = sys.modules[LiveServer.__module__]
    original = module.free_port
    module.free_port = lambda: port
    try:
        return LiveServer(args, env=env, log=log).wait_ready()
    finally:
        module.free_port = original


class Back:
    """The back server, restartable on its port."""

    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.server = start_server(args, tmp / "back-0.log")
        self.url, self.port = self.server.url, self.server.port

    def kill(self) -> None:
        self.server.proc.kill()
        self.server.proc.wait(30)

    def restart(self) -> None:
        self.server = start_server(self.args, self.tmp / f"back-{time.monotonic_ns()}.log", port=self.port)


@pytest.fixture(scope="module")
def back(tiny_model, adapter_store, tmp_path_factory):
    b = Back(["--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32"],
             tmp_path_factory.mktemp("back"))
    yield b
    b.server.stop()


@pytest.fixture(scope="module")
def front_store(tiny_model, adapter_store, tmp_path_factory):
    """The back's two adapters plus one the back does not serve."""
    store = tmp_path_factory.mktemp("front-store")
    for name in ("support-a", "support-b"):
        shutil.copytree(adapter_store / name, store / name)
    build_random_adapter(tiny_model, store / "not-on-back", r=4, seed=7)
    return store


class _PowerExporter(http.server.BaseHTTPRequestHandler):
    """A stand-in for a DCGM exporter (no GPU here): one GPU drawing a steady 100 W."""

    def do_GET(self):
        page = f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0"}} {int(time.time() * 100_000)}\n'  # mJ
        self.send_response(200)
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def exporter():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PowerExporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


@pytest.fixture(scope="module", params=["tgi", "vllm"])
def front(request, back, tiny_model, front_store, exporter, tmp_path_factory):
    """Front servers: the TGI one reads an energy counter, the vLLM one has none (energy unknown)."""
    url = back.url + ("/v1" if request.param == "vllm" else "")
    env = {**FRONT_ENV, **({"SUPPORTKIT_SERVE_ENERGY_COUNTER_URL": exporter} if request.param == "tgi" else {})}
    server = start_server(["--model", str(tiny_model), "--adapters", str(front_store), "--engine", request.param,
                           "--engine-url", url], tmp_path_factory.mktemp("front") / "front.log", env=env)
    server.kind = request.param
    yield server
    server.stop()


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def assert_energy(front, joules, source) -> None:
    if front.kind == "tgi":  # the counter's energy while the request ran: some part of 100 W x its duration
        assert source == "nvml" and 0 < joules < 100 * 60
    else:  # no counter: the kit cannot meter the remote GPU, so it says unknown, never a number
        assert joules is None and source == "unknown"


def requests_seen(server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "supportkit_requests_total")


def test_models_and_refused_adapter(front):
    models = {m.id: m for m in oai(front).models.list().data}
    assert set(models) == {"tiny-qwen2", "support-a", "support-b"}
    assert models["support-b"].parent == "tiny-qwen2" and models["tiny-qwen2"].parent is None
    failed = httpx.get(front.url + "/admin/adapters", headers=AUTH, timeout=30).json()["failed"]
    # The back does not serve it: TGI's list lacks it; the back has no runtime-loading route (vLLM).
    reason = {"tgi": "not among the adapters the TGI engine", "vllm": "does not load adapters at run time"}[front.kind]
    assert reason in failed["not-on-back"]


# The serving core's own client tests, run unchanged against each front server.
CORE_CLIENT_TESTS = [name for name in dir(core_clients) if name.startswith("test_")]
NOT_FOR = {  # (test, front kind): why the remote engine differs there, by design
    ("test_tgi_text_generation_matches_peft", "vllm"): "vLLM's completions API has no prefill details",
    ("test_openai_chat_with_adapter_differs_from_base_and_counts_usage", "vllm"):
        "no energy counter configured for this front: energy is unknown, not measured",
}


@pytest.mark.parametrize("name", CORE_CLIENT_TESTS)
def test_core_client_tests_through_the_front(name, front, tiny_model, adapter_store):
    if (name, front.kind) in NOT_FOR:
        pytest.skip(NOT_FOR[name, front.kind])
    fixtures = {"oai": oai(front), "live_server": front, "tiny_model": tiny_model, "adapter_store": adapter_store}
    test = getattr(core_clients, name)
    test(**{p: fixtures[p] for p in inspect.signature(test).parameters})


def test_openai_answers_equal_the_back(front, back):
    answers = {}
    for model in ("tiny-qwen2", "support-a", "support-b"):
        kw = dict(model=model, messages=QUESTION, max_tokens=16, temperature=0)
        oai(back).chat.completions.create(**kw)  # the back's prefix cache holds the prompt for both answers below
        mine, theirs = oai(front).chat.completions.create(**kw), oai(back).chat.completions.create(**kw)
        assert mine.choices[0].message.content == theirs.choices[0].message.content
        assert mine.choices[0].finish_reason == theirs.choices[0].finish_reason
        if front.kind == "vllm":  # vLLM's completions carry the back's cached prompt tokens; TGI's details do not
            assert mine.usage.model_dump() == theirs.usage.model_dump()
        else:
            assert mine.usage.model_dump(exclude={"prompt_tokens_details"}) == theirs.usage.model_dump(
                exclude={"prompt_tokens_details"}) and mine.usage.prompt_tokens_details is None
        assert_energy(front, mine.model_extra["energy"]["joules"], mine.model_extra["energy"]["source"])
        answers[model] = mine.choices[0].message.content
    assert len(set(answers.values())) == 3


def test_openai_stream_passes_tokens_through(front, back):
    kw = dict(model="support-b", messages=QUESTION, max_tokens=20, temperature=0)
    full = oai(back).chat.completions.create(**kw)
    chunks = list(oai(front).chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == full.choices[0].message.content
    assert len(deltas) > 1  # token by token (tokens that end mid-character carry no text), not one block
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_tgi_tokens_equal_the_back(front, back):
    mine, theirs = InferenceClient(base_url=front.url), InferenceClient(base_url=back.url)
    for adapter in ("support-a", None):
        a = mine.text_generation(PROMPT, max_new_tokens=12, adapter_id=adapter, details=True)
        b = theirs.text_generation(PROMPT, max_new_tokens=12, adapter_id=adapter, details=True)
        assert [t.id for t in a.details.tokens] == [t.id for t in b.details.tokens]
        assert a.generated_text == b.generated_text and a.details.finish_reason == "length"
    r = httpx.post(front.url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}, timeout=60)
    details = r.json()["details"]
    assert_energy(front, details["energy_joules"], details["energy_source"])
    assert r.headers["x-energy-source"] == details["energy_source"]
    assert ("x-energy-joules" in r.headers) == (front.kind == "tgi")


def test_tgi_stream_with_details(front, back):
    prompt = "Why is my VDSL sync rate low"
    client = InferenceClient(base_url=front.url)  # held: the stream closes with the client
    events = list(client.text_generation(prompt, max_new_tokens=10, adapter_id="support-b", stream=True, details=True))
    assert len(events) == 10 and all(e.details is None for e in events[:-1])
    assert events[-1].details.finish_reason == "length" and events[-1].details.generated_tokens == 10
    direct = InferenceClient(base_url=back.url).text_generation(prompt, max_new_tokens=10, adapter_id="support-b")
    assert events[-1].generated_text == direct == "".join(e.token.text for e in events)


def test_completions_route_speaks_openai(back):
    """The back's /v1/completions (what `--engine vllm` uses) with the unmodified openai client."""
    client = oai(back)
    out = client.completions.create(model="support-a", prompt=PROMPT, max_tokens=12, temperature=0, logprobs=1)
    tgi = InferenceClient(base_url=back.url).text_generation(PROMPT, max_new_tokens=12, adapter_id="support-a")
    assert out.choices[0].text == tgi and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == len(out.choices[0].logprobs.tokens) == 12
    chunks = list(client.completions.create(model="support-a", prompt=PROMPT, max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == tgi
    assert chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-adapter", prompt=PROMPT, max_tokens=2, stream=True)


def test_prefill_details(front, back):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "decoder_input_details": True, "adapter_id": "support-a"}}
    r = httpx.post(front.url + "/generate", json=body, timeout=60)
    if front.kind == "vllm":  # not offered by the completions API: refused clearly
        assert r.status_code == 422 and "decoder_input_details" in r.json()["error"]
        return
    direct = httpx.post(back.url + "/generate", json=body, timeout=60).json()
    assert r.json()["details"]["prefill"] == direct["details"]["prefill"] != []
    assert r.json()["generated_text"] == direct["generated_text"]


def test_unknown_adapter_is_refused_before_the_remote(front, back):
    before = requests_seen(back)
    with pytest.raises(openai.NotFoundError, match="no-such-adapter"):
        oai(front).chat.completions.create(model="no-such-adapter", messages=QUESTION, max_tokens=4)
    r = httpx.post(front.url + "/generate", json={"inputs": "hi", "parameters": {"adapter_id": "not-on-back"}}, timeout=30)
    assert r.status_code == 404 and r.json()["error_type"] == "adapter_not_found"
    assert requests_seen(back) == before  # the back never saw them (TGI would answer from the base model)


def test_remote_refusal_is_a_clean_error(front, back):
    # The front allows 2000 new tokens, the back 1024: the back's 4xx comes back in each protocol's shape.
    r = httpx.post(front.url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 1500}}, timeout=30)
    assert r.status_code == 422 and r.json()["error_type"] == "validation" and "1024" in r.json()["error"]
    with pytest.raises(openai.BadRequestError, match="1024"):
        oai(front).chat.completions.create(model="support-a", messages=QUESTION, max_tokens=1500)
    r = httpx.post(front.url + "/generate", json={"inputs": "hi " * 5000, "parameters": {"max_new_tokens": 4}}, timeout=30)
    assert r.status_code == 422 and "tokens" in r.json()["error"]  # checked here, with the local tokenizer


def test_client_leaving_cancels_the_remote_generation(front, back):
    """A client that goes away frees the remote's work too (the front closes its connection to the back)."""
    def cancelled() -> float:
        text = httpx.get(back.url + "/metrics", timeout=30).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "supportkit_requests_total" and s.labels.get("outcome") == "cancelled")

    before = cancelled()
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 1000}}  # greedy: 1000 tokens, tens of seconds
    with httpx.stream("POST", front.url + "/generate_stream", json=body, timeout=60) as r:
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data:")
            if events == 3:
                break
    deadline = time.monotonic() + 30
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled() == before + 1


def _wait_health(server, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/health", timeout=5).status_code == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"/health of {server.url} did not become {status}")


def _stream_until_error(front, back) -> list[dict]:
    """Start a long stream on the front, kill the back after the first tokens; return every event."""
    if front.kind == "tgi":
        path, body = "/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 1000}}
    else:
        path, body = "/v1/chat/completions", {"model": "support-a", "messages": QUESTION, "max_tokens": 1000,
                                              "temperature": 0, "stream": True}
    events = []
    with httpx.stream("POST", front.url + path, json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            events.append(json.loads(line[5:]))
            if len(events) == 3:
                back.kill()
    return events


def test_back_killed_mid_stream_then_recovers(front, back):
    expected = oai(front).chat.completions.create(model="support-a", messages=QUESTION, max_tokens=8, temperature=0)
    events = _stream_until_error(front, back)
    error = events[-1]["error"]
    if front.kind == "tgi":
        assert events[-1]["error_type"] == "unavailable" and "went away" in error
        assert all(e.get("details") is None for e in events[:-1])
    else:
        assert error["code"] == "unavailable" and error["type"] == "server_error"
        assert not any(e.get("choices") and e["choices"][0].get("finish_reason") for e in events[:-1])

    with pytest.raises(openai.APIStatusError) as err:  # while the back is down: a 503 in OpenAI's shape
        oai(front).chat.completions.create(model="support-a", messages=QUESTION, max_tokens=8, temperature=0)
    assert err.value.status_code == 503
    r = httpx.post(front.url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}, timeout=30)
    assert r.status_code == 503 and r.json()["error_type"] == "unavailable"
    _wait_health(front, 503)

    back.restart()
    _wait_health(front, 200)
    again = oai(front).chat.completions.create(model="support-a", messages=QUESTION, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == expected.choices[0].message.content


@pytest.mark.parametrize("status,body,cls", [
    (422, b'{"error": "inputs too long", "error_type": "validation"}', InvalidRequest),
    (400, b'{"error": {"message": "bad", "type": "invalid_request_error"}}', InvalidRequest),
    (404, b'{"error": {"message": "no model", "code": "model_not_found"}}', AdapterNotFound),
    (429, b'{"error": "queue full", "error_type": "overloaded"}', Overloaded),
    (424, b'{"error": "CUDA OOM", "error_type": "generation"}', GenerationFailed),
    (500, b'{"error": "incomplete", "error_type": "incomplete_generation"}', GenerationFailed),
    (503, b"<html>Service Unavailable</html>", Unavailable),
    (502, b"", Unavailable),
])
def test_remote_error_mapping(status, body, cls):
    err = error_from_body(status, body, "remote")
    assert type(err) is cls and err.message.startswith("remote: ")


def test_stream_error_event_mapping():
    assert isinstance(error_from_event({"error": "queue full", "error_type": "overloaded"}, "x"), Overloaded)
    assert isinstance(error_from_event({"error": {"message": "m", "code": "validation"}}, "x"), InvalidRequest)
    assert isinstance(error_from_event({"error": "boom"}, "x"), GenerationFailed)


def test_dcgm_counter_is_summed_over_gpus():
    page = ('# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n'
            'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="a"} 1500\n'
            'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="1",UUID="b"} 2500\n'
            'DCGM_FI_DEV_POWER_USAGE{gpu="0"} 250\n')
    assert parse_counter(page, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") == 4000
    assert parse_counter(page, "NOT_THERE") is None


class _Exporter(http.server.BaseHTTPRequestHandler):
    """A stand-in for a DCGM exporter (no GPU here): two GPUs whose counters add 500 mJ each per scrape."""

    scrapes = 0
    broken = False

    def do_GET(self):
        cls = type(self)
        if cls.broken:
            self.send_response(500)
            self.end_headers()
            return
        cls.scrapes += 1
        page = "".join(f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="{g}"}} {10_000 + 500 * cls.scrapes}\n' for g in (0, 1))
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def test_counter_energy_is_shared_by_tokens_and_adds_up():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"

    async def scenario():  # every reading adds 1 J (2 GPUs x 500 mJ)
        meter = CounterEnergy(url, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
        await meter.begin("a")  # first reading
        meter.token("a"), meter.token("a")
        await meter.begin("b")  # +1 J, all a's
        for rid in ("a", "b", "b", "b"):
            meter.token(rid)
        a = await meter.end("a")  # +1 J: a 1/4, b 3/4
        b = await meter.end("b")  # +1 J: b alone
        await meter.begin("c")  # +1 J while nothing ran: idle
        _Exporter.broken = True
        c = await meter.end("c")  # unreadable: unknown, never a guess
        await meter.aclose()
        return a, b, c, meter.idle_joules

    try:
        a, b, c, idle = asyncio.run(scenario())
    finally:
        server.shutdown()
    # a: 1 J before its first token was settled (prefill), then 0.25 J; b: 0.75 J in the interval of its
    # first tokens (prefill), then 1 J.
    assert a == pytest.approx({"prefill": 1.0, "decode": 0.25}) and b == pytest.approx({"prefill": 0.75, "decode": 1.0})
    assert sum(a.values()) + sum(b.values()) == pytest.approx(3.0)
    assert idle == pytest.approx(1.0) and c is None


@pytest.fixture(scope="module")
def prompt_only_model(tiny_model, tmp_path_factory):
    """The tiny model's config and tokenizer without its weights: all the remote engine needs."""
    out = tmp_path_factory.mktemp("prompt-only") / "tiny-qwen2"
    shutil.copytree(tiny_model, out, ignore=shutil.ignore_patterns("*.safetensors"))
    return out


def _generate(engine, adapter, n=4):
    req = GenerationRequest(prompt=PROMPT, adapter=adapter, params=SamplingParams(max_new_tokens=n))
    return asyncio.run(engine.generate(req))


def test_lorax_loads_adapters_on_first_use(back, prompt_only_model, front_store):
    engine = RemoteEngine(prompt_only_model, "lorax", back.url)
    engine.start()
    try:
        assert engine.health() and engine.fingerprint is None
        for name in ("support-a", "not-on-back"):  # validated here (shapes from the config alone), not offered
            engine.load_adapter(name, front_store / name)
        result = _generate(engine, "support-a")
        assert result.generated_tokens == 4 and result.adapter == "support-a" and result.energy_source == "unknown"
        with pytest.raises(AdapterNotFound, match="not-on-back"):  # the remote's 404, in the kit's terms
            _generate(engine, "not-on-back")
        bad = front_store.parent / "wrong-shapes"
        build_random_adapter(other_width_model(front_store.parent / "other-width"), bad, seed=3)
        with pytest.raises(AdapterInvalid, match="shapes"):
            engine.load_adapter("wrong-shapes", bad)
    finally:
        engine.stop()


def other_width_model(out):
    """A tiny Qwen2 of hidden size 32 (the served one has 64): its adapters do not fit."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def test_remote_down_at_start(prompt_only_model, front_store):
    engine = RemoteEngine(prompt_only_model, "vllm", f"http://127.0.0.1:{free_port()}/v1", health_interval_s=0.2)
    engine.start()
    try:
        assert not engine.health()
        engine.load_adapter("support-a", front_store / "support-a")  # offered once the remote is up
        with pytest.raises(Unavailable, match="unreachable"):
            _generate(engine, "support-a")
        with pytest.raises(AdapterNotFound):  # still refused here first
            _generate(engine, "no-such-adapter")
    finally:
        engine.stop()
