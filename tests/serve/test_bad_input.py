"""Bad input of every kind gets a clear 4xx JSON error in its protocol's shape, and the server keeps serving."""

import json
import shutil

import httpx
import pytest

from common.tiny import build_random_adapter
from tests.conftest import ADMIN_TOKEN

CHAT = {"model": "support-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
GEN = {"inputs": "hello", "parameters": {"max_new_tokens": 4}}


def post(server, path, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=data, headers={"content-type": "application/json", **kw.pop("headers", {})},
                      timeout=60, **kw)


def assert_tgi_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and body["error_type"]


def assert_openai_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]


@pytest.mark.parametrize("path,body,status", [
    ("/generate", {**GEN, "parameters": {"adapter_id": "nope"}}, 404),
    ("/adapters/nope/generate", GEN, 404),
    ("/generate", b"{not json", 422),
    ("/generate", {"inputs": ""}, 422),
    ("/generate", {"parameters": {}}, 422),
    ("/generate", {**GEN, "parameters": {"temperature": -1}}, 422),
    ("/generate", {**GEN, "parameters": {"top_p": 1.5}}, 422),
    ("/generate", {**GEN, "parameters": {"max_new_tokens": 0}}, 422),
    ("/generate", {**GEN, "parameters": {"max_new_tokens": 10**9}}, 422),
    ("/generate", {**GEN, "parameters": {"best_of": 3}}, 422),
    ("/generate", {**GEN, "parameters": {"watermark": True}}, 422),
    ("/generate", {**GEN, "parameters": {"adapter_id": "support-a"}, "inputs": "word " * 5000}, 422),
    ("/generate_stream", {**GEN, "parameters": {"adapter_id": "../../etc"}}, 404),
])
def test_tgi_routes_refuse_bad_input(live_server, path, body, status):
    assert_tgi_error(post(live_server, path, body), status)


@pytest.mark.parametrize("body,status", [
    ({**CHAT, "model": "nope"}, 404),
    ({**CHAT, "messages": []}, 400),
    ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400),
    ({**CHAT, "temperature": 9}, 400),
    ({**CHAT, "n": 3}, 400),
    ({**CHAT, "max_tokens": 10**9}, 400),
    ({**CHAT, "messages": [{"role": "user", "content": "word " * 5000}]}, 400),
    ("[1, 2", 400),
])
def test_openai_route_refuses_bad_input(live_server, body, status):
    assert_openai_error(post(live_server, "/v1/chat/completions", body), status)


def test_oversize_body_is_413(live_server):
    """Every time, as a JSON answer (the server reads and discards the rest of the body before answering, so the
    client never sees a reset connection instead)."""
    import urllib.error
    import urllib.request

    r = post(live_server, "/generate", {"inputs": "x" * 2_000_000})
    assert_tgi_error(r, 413)
    data = json.dumps({"inputs": "x" * 2_000_000}).encode()
    for _ in range(5):  # urllib writes the whole body before reading: the case that used to see a reset
        req = urllib.request.Request(live_server.url + "/generate", data=data, headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 413 and json.loads(err.value.read())["error_type"] == "validation"


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}),
    ("/v1/chat/completions", {**CHAT, "temperature": "0.5"}),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 4.5}),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": False}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "return_tokens_as_token_ids": "true"}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": 1}),
])
def test_openai_routes_refuse_wrong_json_types(live_server, path, body):
    assert_openai_error(post(live_server, path, body), 400)


@pytest.mark.parametrize("body", [
    {**GEN, "stream": "yes"},
    {**GEN, "parameters": {"max_new_tokens": "4"}},
    {**GEN, "parameters": {"details": "true"}},
    {**GEN, "parameters": {"do_sample": 1}},
    {**GEN, "parameters": {"temperature": "0.7"}},
])
def test_tgi_routes_refuse_wrong_json_types(live_server, body):
    assert_tgi_error(post(live_server, "/", body), 422)


def test_options_lists_every_method_of_a_path(live_server):
    r = httpx.options(live_server.url + "/admin/adapters/support-a")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, POST"
    assert r.json()["error_type"] == "method_not_allowed"


def test_server_still_answers_after_bad_input(live_server):
    r = post(live_server, "/v1/chat/completions", {**CHAT, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None


def _admin(server, method, name):
    return httpx.request(method, f"{server.url}/admin/adapters/{name}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)


@pytest.fixture(scope="module")
def bad_store(server_factory, tiny_model, tiny_gemma, tmp_path_factory):
    """A server whose store holds one good adapter and every kind of broken one."""
    store = tmp_path_factory.mktemp("bad-store")
    build_random_adapter(tiny_model, store / "good", seed=3)
    pickled = build_random_adapter(tiny_model, store / "pickled", seed=4)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    wrong = build_random_adapter(tiny_model, store / "wrong-targets", seed=5)
    cfg = json.loads((wrong / "adapter_config.json").read_text())
    from safetensors.torch import load_file, save_file

    tensors = {k.replace("q_proj", "not_a_layer"): v for k, v in load_file(wrong / "adapter_model.safetensors").items()}
    save_file(tensors, wrong / "adapter_model.safetensors")
    (wrong / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["not_a_layer", "v_proj"]}))
    corrupt = build_random_adapter(tiny_model, store / "corrupt", seed=6)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    build_random_adapter(tiny_gemma, store / "other-base", seed=7, target_modules=("q_proj", "k_proj"))
    # Same shapes as the served model, but the manifest says it was trained on another base model.
    from common.manifest import AdapterManifest, BaseModelRef, write_manifest
    from common.models import model_fingerprint

    same_shapes = build_random_adapter(tiny_gemma, store / "other-fingerprint", seed=7, target_modules=("q_proj",))
    write_manifest(same_shapes, AdapterManifest(
        name="other-fingerprint", base_model=BaseModelRef(name="tiny-gemma3", fingerprint=model_fingerprint(tiny_gemma))))
    noconfig = build_random_adapter(tiny_model, store / "no-config", seed=8)
    (noconfig / "adapter_config.json").unlink()
    server = server_factory("--model", str(tiny_model), "--adapters", str(store), "--dtype", "float32",
                            env={"SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN})
    return server, store


def test_bad_adapters_are_refused_with_reasons(bad_store):
    server, _ = bad_store
    listing = httpx.get(server.url + "/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert [a["name"] for a in listing["adapters"]] == ["good"]
    failed = listing["failed"]
    assert "pickled" in failed["pickled"] and ".bin" in failed["pickled"]
    assert "not_a_layer" in failed["wrong-targets"]
    assert "cannot be read" in failed["corrupt"]
    assert "shapes" in failed["other-base"]
    assert "trained on base model 'tiny-gemma3'" in failed["other-fingerprint"]
    assert "adapter_config.json" in failed["no-config"]
    for name in failed:
        r = _admin(server, "POST", name)
        assert_tgi_error(r, 422)
    r = post(server, "/v1/chat/completions", {**CHAT, "model": "good"})
    assert r.status_code == 200


@pytest.mark.parametrize("name,status,error_type", [
    ("..", 404, "not_found"),  # the client sends /admin: no such route
    ("..%2F..%2Fetc", 404, "not_found"),  # a path with slashes matches no adapter route
    ("a%2Fb", 404, "not_found"),
    ("%2E%2E", 422, "adapter_invalid"),  # names reach the kit's name check
    (".hidden", 422, "adapter_invalid"),
    ("x" * 80, 422, "adapter_invalid"),
    ("semi;colon", 422, "adapter_invalid"),
])
def test_traversal_and_bad_names_are_refused(bad_store, name, status, error_type):
    server, _ = bad_store
    r = _admin(server, "POST", name)
    assert_tgi_error(r, status)
    assert r.json()["error_type"] == error_type, r.text


def test_symlink_out_of_store_is_refused(bad_store, tmp_path, tiny_model):
    server, store = bad_store
    outside = build_random_adapter(tiny_model, tmp_path / "outside", seed=9)
    (store / "sneaky").symlink_to(outside, target_is_directory=True)
    r = _admin(server, "POST", "sneaky")
    assert_tgi_error(r, 422)
    assert "outside" in r.json()["error"]
    (store / "sneaky").unlink()


def test_admin_needs_the_token(bad_store):
    server, _ = bad_store
    assert httpx.get(server.url + "/admin/adapters").status_code == 401
    assert httpx.get(server.url + "/admin/adapters", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_admin_disabled_without_token(live_server, server_factory, tiny_model):
    server = server_factory("--model", str(tiny_model), "--dtype", "float32", env={"SUPPORTKIT_ADMIN_TOKEN": ""})
    r = httpx.get(server.url + "/admin/adapters", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and "disabled" in r.json()["error"]
