"""The records that cross steps: a conversation record is a question record; bad lines are plain errors."""

import pytest

from common.records import Conversation, QuestionRecord, parse_question

CONVERSATION = {
    "id": "c1", "split": "test", "scenario": {"term": "APN", "cause": "misconfiguration", "context": "mobile"},
    "messages": [{"role": "system", "content": "You are a support agent."},
                 {"role": "user", "content": "Data does not work."},
                 {"role": "assistant", "content": "Check the APN."}],
}


def test_a_conversation_record_is_a_question_record():
    Conversation.model_validate(CONVERSATION)
    q = parse_question(CONVERSATION)
    assert [m.role for m in q.prompt()] == ["system", "user"]
    assert q.reference_answer() == "Check the APN." and q.scenario["term"] == "APN"


def test_a_plain_question_and_extra_keys_survive_a_round_trip():
    q = parse_question({"id": 7, "question": "Why is my 4G slow?", "feedback": {"rating": 1, "comment": None}})
    assert q.id == "7" and q.prompt()[0].content == "Why is my 4G slow?" and q.reference_answer() is None
    dumped = q.model_dump(mode="json", exclude_none=True)
    assert dumped == {"id": "7", "question": "Why is my 4G slow?", "feedback": {"rating": 1, "comment": None}}
    assert parse_question(dumped) == q


@pytest.mark.parametrize("record, message", [
    ([1, 2], "JSON object"),
    ({"question": "no id"}, "needs an `id`"),
    ({"id": "x"}, "needs `question`"),
    ({"id": "x", "messages": [{"role": "tool", "content": "?"}]}, "role system, user or assistant"),
    ({"id": "x", "messages": [{"role": "assistant", "content": "only me"}]}, "no user turn"),
    ({"id": "x", "question": "a", "reference": 3}, "`reference` must be a string"),
])
def test_bad_records_say_what_to_fix(record, message):
    with pytest.raises(ValueError, match=message):
        parse_question(record)


def test_question_records_keep_their_field_order_on_disk():
    record = QuestionRecord(id="feedback-1", messages=[{"role": "user", "content": "hi"}], reference="hello",
                            feedback={"rating": 1})
    assert list(record.model_dump(exclude_none=True)) == ["id", "messages", "reference", "feedback"]
