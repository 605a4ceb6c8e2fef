"""The demo page in headless Chromium: pick a model, chat, read the metrics, rate, see a hot-loaded adapter
appear without a reload, compare two models; a screenshot goes to test-artifacts/demo.png."""

import re
import shutil
from pathlib import Path

import pytest

from serve.feedback import FeedbackStore
from tests.conftest import ROOT

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 120_000  # the shared CI machine can be slow; nothing here measures time


@pytest.fixture
def store(adapter_store, tmp_path):
    """A writable adapter store with `support-a` only; `support-b` is added while the page is open."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copytree(adapter_store / "support-a", root / "support-a")
    return root


@pytest.fixture
def browser_page():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page, errors
        browser.close()


def pick(page, dropdown: str, option: str):
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(f"document.querySelector('{dropdown} input').value === '{option}'", timeout=WAIT_MS)


def test_chat_metrics_feedback_hot_load_and_compare(browser_page, server_factory, tiny_model, adapter_store, store, tmp_path):
    page, errors = browser_page
    db = tmp_path / "feedback.db"
    srv = server_factory("--model", str(tiny_model), "--adapters", str(store), "--dtype", "float32",
                         env={"SUPPORTKIT_SERVE_FEEDBACK_DB": str(db), "SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0.5"})
    page.set_default_timeout(WAIT_MS)
    page.goto(srv.url + "/demo/")
    page.wait_for_function("document.querySelector('#model-a input')?.value === 'support-a'")
    assert "telecom operator" in page.locator("#info-a").inner_text()  # the system prompt preview

    # Pick the base model, then the adapter again, and ask with customer PII in the message.
    pick(page, "#model-a", "tiny-qwen2 (base model)")
    page.wait_for_function("document.querySelector('#info-a').innerText.includes('the base model')")
    pick(page, "#model-a", "support-a")
    page.locator("#message textarea").fill("My fibre drops every evening. Call me on +33 6 12 34 56 78.")
    page.locator("#send").click()
    metrics = page.locator("#chat-a .reply-metrics").first
    metrics.wait_for()
    text = metrics.inner_text()
    for label in ("latency", "first token", "tokens", "energy", "estimate"):
        assert label in text
    assert re.search(r"\d+ tokens \(\d+ in\)", text)

    # Thumbs up on the reply, then a comment.
    page.locator("#chat-a button[aria-label='Like']").last.click()
    page.wait_for_function("document.querySelector('#feedback-status').innerText.includes('thumbs up')")
    page.locator("#comment textarea").fill("Good steps; reach me at jane@example.com")
    page.locator("#save-comment").click()
    page.wait_for_function("document.querySelector('#feedback-status').innerText.includes('Comment saved')")
    [rec] = FeedbackStore(db).records()
    assert rec.rating == 1 and rec.model == "support-a" and rec.comment == "Good steps; reach me at [EMAIL]"
    assert rec.messages[0]["content"] == "My fibre drops every evening. Call me on [PHONE]."

    # An adapter copied into the store shows up in the picker without reloading the page.
    shutil.copytree(adapter_store / "support-b", store / ".support-b.tmp")
    (store / ".support-b.tmp").rename(store / "support-b")
    page.locator("#compare input").check()
    page.locator("#chat-b").wait_for()
    page.wait_for_function("""async () => {
        document.querySelector('#model-b input').click();
        await new Promise(r => setTimeout(r, 300));
        const found = [...document.querySelectorAll('[role=option]')].some(o => o.innerText.trim() === 'support-b');
        document.querySelector('#message textarea').focus();
        return found;
    }""", polling=1000)
    pick(page, "#model-b", "support-b")

    # Compare: the same question answered by both models, side by side.
    page.locator("#message textarea").fill("It is the third outage this week, I want to talk to a real person.")
    page.locator("#send").click()
    page.locator("#chat-b .reply-metrics").first.wait_for()
    page.wait_for_function("document.querySelectorAll('#chat-a .reply-metrics').length === 2")
    assert page.locator("#chat-a .handoff").count() == 1 and page.locator("#chat-b .handoff").count() == 1
    page.wait_for_function("document.querySelector('#info-b').innerText.includes('support-b: LoRA')")

    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "demo.png"), full_page=True)
    assert errors == []


def test_grounded_reply_shows_its_sources_and_the_token_limit_fits_the_adapter(browser_page, server_factory, tiny_model,
                                                                               tmp_path):
    """An adapter trained grounded: its sources beside the reply, "Max new tokens" sized from its manifest's
    reply lengths, and a visible mark when the reply stops at that limit (a random adapter never ends its turn)."""
    from common.chat_template import KIT_CHAT_TEMPLATE
    from common.knowledge import load_knowledge, manifest_section
    from common.manifest import AdapterManifest, write_manifest
    from common.tiny import build_random_adapter

    page, errors = browser_page
    store = tmp_path / "store"
    build_random_adapter(tiny_model, store / "support-kb", r=4, seed=5)
    write_manifest(store / "support-kb", AdapterManifest(
        name="support-kb", system_prompt="You are a telecom support agent.", chat_template=KIT_CHAT_TEMPLATE,
        knowledge=manifest_section(load_knowledge(), 2), training={"reply_tokens": {"median": 60, "p90": 70, "max": 90}}))
    srv = server_factory("--model", str(tiny_model), "--adapters", str(store), "--dtype", "float32")
    page.set_default_timeout(WAIT_MS)
    page.goto(srv.url + "/demo/")
    page.wait_for_function("document.querySelector('#model-a input')?.value === 'support-kb'")
    page.get_by_text("Generation", exact=True).click()  # the accordion holding the slider
    page.wait_for_function("document.querySelector('#max-tokens input[type=number]')?.value === '128'")  # max(90, 1.5 x 70) -> 128
    page.locator("#message textarea").fill("How do I keep my phone number when I move to your network?")
    page.locator("#send").click()
    sources = page.locator("#chat-a .reply-sources").first
    sources.wait_for()
    assert "porting" in sources.inner_text() and "Sources" in sources.inner_text()
    assert "Cut at the limit of 128 new tokens" in page.locator("#chat-a .reply-metrics .cut").first.inner_text()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "demo-sources.png"), full_page=True)
    assert errors == []
