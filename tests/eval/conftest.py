"""Fixtures of the eval tests: the scripted target/judge server and small panels."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.questions import DEMO_QUESTIONS
from tests.conftest import free_port
from tests.eval.scripted_server import Scripted, ScriptedServer, demo_references


@pytest.fixture()
def scripted_factory():
    started: list[ScriptedServer] = []

    def start(**kwargs) -> ScriptedServer:
        server = ScriptedServer(Scripted(demo_references(DEMO_QUESTIONS), **kwargs), free_port()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def write_panel(path: Path, judge_url: str | None, judge_model: str = "judge", protocols=("rubric", "pairwise"),
                extra: str = "", anchor: str = "base", reference: bool = True, method: str = "embedding") -> Path:
    """A panel YAML: the reference judge and/or one LLM judge at `judge_url`."""
    lines = [f"anchor: {anchor}", "bootstrap: 50", "decoding: {max_tokens: 64, temperature: 0, seed: 0}", "judges:"]
    if reference:
        lines += ["  - name: reference", "    kind: reference", f"    method: {method}"]
    if judge_url:
        lines += ["  - name: llm", "    kind: llm", f"    url: {judge_url}", f"    model: {judge_model}",
                  f"    protocols: [{', '.join(protocols)}]", "    backoff_s: 0.01", "    concurrency: 3",
                  "    price: {input_per_mtok: 2.0, output_per_mtok: 10.0}"]
        lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
    path.write_text("\n".join(lines) + "\n")
    return path
