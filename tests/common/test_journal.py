"""The append-only journal: a write cut short by a kill is dropped, nothing is doubled."""

import json

from common.journal import Journal, read_records


def test_partial_tail_is_cut_and_keys_are_not_doubled(tmp_path):
    path = tmp_path / "judgments.jsonl"
    path.write_text(json.dumps({"key": "a", "v": 1}) + "\n" + '{"key": "b", "v"')  # killed mid-line
    assert [r["key"] for r in read_records(path)] == ["a"]
    journal = Journal(path)
    assert journal.done == {"a"}
    assert journal.append({"key": "b", "v": 2}) is True
    assert journal.append({"key": "a", "v": 3}) is False
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]
