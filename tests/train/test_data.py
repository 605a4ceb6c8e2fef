"""Glossary, scenario grid, offline generation, scenario-disjoint splits, de-duplication and the data CLI."""

import json

import pytest

from common.records import Conversation
from train.data.build import build_dataset, content_key, pick_scenarios
from train.data.glossary import load_glossary, scenarios, system_prompt
from train.data.offline import generate_offline
from train.data.records import assign_splits, check_disjoint, read_conversations


@pytest.fixture(scope="module")
def grid():
    return scenarios(load_glossary())


def test_grid_is_1716_unique_stable_ids(grid):
    ids = [s.id for s in grid]
    assert len(ids) == 1560 + 156 == len(set(ids))  # faults, then informational scenarios
    assert ids[0] == "ftth.power_cabling.home"  # built from glossary ids, so it never depends on run order
    assert scenarios(load_glossary())[777].id == ids[777]


def test_offline_generation_is_deterministic_and_varied(grid):
    system = system_prompt()
    some = pick_scenarios(grid, 200, seed=3)
    glossary = load_glossary()
    a = list(generate_offline(some, 2, system, glossary, seed=0))
    b = list(generate_offline(some, 2, system, glossary, seed=0))
    assert [m for _, _, m in a] == [m for _, _, m in b]
    conversations = {content_key(m) for _, _, m in a}
    assert len(conversations) >= 0.99 * len(a)
    openings = {m[2]["content"].split(".")[0] for _, _, m in a}
    assert len(openings) >= 5  # several empathy phrasings, not one template
    shapes = {sum(x["role"] == "assistant" for x in m) for _, _, m in a}
    assert shapes == {1, 2}
    for sc, _, messages in a:
        assert messages[0] == {"role": "system", "content": system}
        assert [m["role"] for m in messages[1:]][:2] == ["user", "assistant"]
        text = " ".join(m["content"] for m in messages if m["role"] == "assistant")
        assert "{" not in text and "}" not in text  # no unfilled template slot


def test_splits_are_disjoint_by_scenario_and_near_the_ratios(offline_dataset):
    rows = read_conversations(offline_dataset)
    check_disjoint(rows)
    by_split = {s: {r.scenario.id for r in rows if r.split == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert (len(by_split["train"]), len(by_split["val"]), len(by_split["test"])) == (96, 12, 12)


def test_check_disjoint_catches_a_scenario_in_two_splits():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    sc = {"term": "dns", "cause": "outage", "context": "home"}
    rows = [Conversation(id="a", messages=msgs, scenario=sc, split="train"),
            Conversation(id="b", messages=msgs, scenario=sc, split="val")]
    with pytest.raises(ValueError, match="dns.outage.home"):
        check_disjoint(rows)


def test_assign_splits_is_stable_for_a_scenario_whatever_the_order():
    ids = [f"t{i}.c.x" for i in range(100)]
    assert assign_splits(ids, seed=1) == assign_splits(list(reversed(ids)), seed=1)


def test_duplicates_are_dropped(tmp_path, grid):
    system = system_prompt()
    sc = grid[0]
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "My ONT is red."},
            {"role": "assistant", "content": "Sorry! Check the fibre."}]
    same = [dict(m) for m in msgs]
    same[1]["content"] = "my ONT is red"  # differs only in case and punctuation
    assert content_key(msgs) == content_key(same)
    _, stats = build_dataset([(sc, 0, msgs), (sc, 1, same)], tmp_path, {"generator": "test"})
    assert stats["conversations"] == 1 and stats["duplicates_dropped"] == 1


def test_cli_writes_design_records_and_stats(offline_dataset):
    lines = (offline_dataset / "conversations.jsonl").read_text().splitlines()
    assert len(lines) == 240
    rec = json.loads(lines[0])
    assert set(rec) == {"id", "messages", "scenario", "split"}
    assert set(rec["scenario"]) == {"term", "cause", "context"}
    stats = json.loads((offline_dataset / "stats.json").read_text())
    assert stats["conversations"] == 240 and stats["scenarios"] == 120
    assert stats["system_prompt"] == system_prompt()  # the system prompt used is recorded
    assert stats["fingerprint"].startswith("sha256:")


def test_cli_rejects_bad_arguments_without_traceback(tmp_path):
    from tests.train.conftest import cli

    for args in (["--out", str(tmp_path)], ["--offline", "--endpoint", "http://127.0.0.1:9", "--out", str(tmp_path)],
                 ["--offline", "--out", str(tmp_path), "--val", "0.7", "--test", "0.5"]):
        proc = cli("data", "generate", *args, check=False)
        assert proc.returncode == 2, args
        assert "error:" in proc.stderr and "Traceback" not in proc.stderr
