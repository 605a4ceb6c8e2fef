"""The legacy `text-generation` client (0.7.0): it posts to its base URL exactly as given, always asks for
details, and reads TGI's error shape; `/adapters/{name}` base URLs select an adapter for it.

It pins huggingface-hub<1.0, so it is not a dependency of the kit: `make python` installs it with --no-deps."""

import asyncio

import pytest

text_generation = pytest.importorskip("text_generation")


def test_generate_and_stream_per_adapter(live_server):
    base = text_generation.Client(live_server.url, timeout=60)
    adapter = text_generation.Client(live_server.url + "/adapters/support-a", timeout=60)
    prompt = "The ONT light is red and"
    plain = base.generate(prompt, max_new_tokens=8)
    tuned = adapter.generate(prompt, max_new_tokens=8)
    assert plain.details.generated_tokens == len(plain.details.tokens) <= 8
    assert [t.id for t in plain.details.tokens] != [t.id for t in tuned.details.tokens]
    streamed = list(adapter.generate_stream(prompt, max_new_tokens=8))
    assert [r.token.id for r in streamed] == [t.id for t in tuned.details.tokens]
    assert streamed[-1].generated_text == tuned.generated_text


def test_async_client_and_errors(live_server):
    async def run():
        client = text_generation.AsyncClient(live_server.url + "/adapters/support-b", timeout=60)
        response = await client.generate("Is roaming free?", max_new_tokens=6, seed=3, do_sample=True)
        assert response.details.seed == 3
        missing = text_generation.AsyncClient(live_server.url + "/adapters/no-such-adapter", timeout=60)
        with pytest.raises(text_generation.errors.NotFoundError):
            await missing.generate("hi", max_new_tokens=2)
        with pytest.raises(text_generation.errors.ValidationError):
            await client.generate("hi", max_new_tokens=2, temperature=0.0000001, top_p=0.999999, truncate=0)

    asyncio.run(run())
