"""Generation through a real endpoint: the kit's own server (tiny model) as generator, stopped mid-run; the
re-run against a new server sends only the requests whose answers are missing from the cache."""

import json

from train.data.build import build_dataset, pick_scenarios
from train.data.endpoint import EndpointGenerator, EndpointSettings, ResponseCache
from train.data.glossary import load_glossary, scenarios, system_prompt
from train.data.records import read_conversations


def _settings(url: str, **kw) -> EndpointSettings:
    return EndpointSettings(url=url, model="tiny-qwen2", temperature=0.9, max_tokens=12, concurrency=2, retries=1,
                            backoff_s=0.05, timeout_s=60, min_chars=1, **kw)


def test_failure_mid_run_then_resume_generates_only_what_is_missing(tmp_path, tiny_model, server_factory):
    chosen = pick_scenarios(scenarios(load_glossary()), 6, seed=1)
    system = system_prompt()
    cache_path = tmp_path / "cache.jsonl"
    first = server_factory("--model", str(tiny_model), "--dtype", "float32")

    class StopServerAfter:
        """Posts for real; after K answers the server is stopped, as if it crashed mid-run."""

        def __init__(self, gen, k):
            self.gen, self.k, self.n = gen, k, 0

        def __call__(self, path, json):
            resp = self.gen._client.post(path, json=json)
            self.n += 1
            if self.n == self.k:
                first.stop()
            return resp

    gen = EndpointGenerator(_settings(first.url), ResponseCache(cache_path), system)
    gen._post = StopServerAfter(gen, 5)
    done = gen.run(chosen, per_scenario=1)
    gen.close()
    assert gen.stats.failed, "the stopped server should have failed some conversations"
    assert len(done) < 6
    cached_keys = {json.loads(line)["key"] for line in cache_path.read_text().splitlines()}
    assert len(cached_keys) >= 5

    second = server_factory("--model", str(tiny_model), "--dtype", "float32")
    sent = []
    gen2 = EndpointGenerator(_settings(second.url), ResponseCache(cache_path), system)

    def recording_post(path, json):
        sent.append(gen2._key(json["messages"][0]["content"], json["seed"]))
        return gen2._client.post(path, json=json)

    gen2._post = recording_post
    items = gen2.run(chosen, per_scenario=1)
    gen2.close()
    assert not gen2.stats.failed and len(items) == 6
    assert sent and not set(sent) & cached_keys  # nothing already paid for was asked again
    assert gen2.stats.cache_hits >= len(cached_keys)
    total = len(cache_path.read_text().splitlines())
    assert total == len(cached_keys) + len(sent)

    # A third run is free: every answer comes from the cache
    gen3 = EndpointGenerator(_settings("http://127.0.0.1:9"), ResponseCache(cache_path), system)
    assert len(gen3.run(chosen, per_scenario=1)) == 6 and gen3.stats.requests == 0
    gen3.close()

    path, stats = build_dataset(items, tmp_path / "ds", {"generator": "endpoint:openai"})
    rows = read_conversations(path)
    assert stats["conversations"] == len(rows) >= 5  # identical random answers, if any, are de-duplicated
    assert all([m.role for m in r.messages] == ["system", "user", "assistant"] for r in rows)


def test_cli_endpoint_generation_reports_failure_then_resumes(tmp_path, tiny_model, server_factory):
    from tests.train.conftest import cli

    out = tmp_path / "ds"
    args = ["data", "generate", "--out", str(out), "--model", "tiny-qwen2", "--scenarios", "3",
            "--max-tokens", "8", "--min-chars", "1", "--retries", "0", "--backoff", "0.01"]
    proc = cli(*args, "--endpoint", "http://127.0.0.1:9", check=False)  # nothing listens there
    assert proc.returncode == 1 and "run the same command again" in proc.stderr
    srv = server_factory("--model", str(tiny_model), "--dtype", "float32")
    proc = cli(*args, "--endpoint", srv.url)
    summary = next(line for line in proc.stdout.splitlines() if line.startswith('{"generation"'))
    assert json.loads(summary)["generation"]["failed"] == 0
    assert len(read_conversations(out)) >= 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["generator"] == "endpoint:openai" and stats["model"] == "tiny-qwen2"
