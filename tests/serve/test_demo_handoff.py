"""Hand-off rules: phrases per language from YAML, word boundaries, the last user turn of a rendered prompt."""

import pytest

from serve.handoff import HandoffRules

RULES = HandoffRules.load()


@pytest.mark.parametrize(("customer", "reply", "reason", "language"), [
    ("I want to TALK TO A  REAL person now", "", "customer_request", "en"),
    ("Can you transfer me to billing?", "", "customer_request", "en"),
    ("Je voudrais parler à un conseiller.", "", "customer_request", "fr"),
    ("Ich möchte mit einem Mitarbeiter sprechen", "", "customer_request", "de"),
    ("Quiero hablar con una persona", "", "customer_request", "es"),
    ("My internet is slow", "I will transfer you to a technician who can check the line.", "reply_escalation", "en"),
    ("Ma box clignote", "Je vais vous transférer au service technique.", "reply_escalation", "fr"),
])
def test_flagged(customer, reply, reason, language):
    verdict = RULES.check(customer, reply)
    assert verdict.flagged and verdict.reason == reason and verdict.language == language


@pytest.mark.parametrize(("customer", "reply"), [
    ("My personal hotspot does not work", "Open Settings, then Personal Hotspot."),
    ("The human-readable error says 651", "Error 651 means the modem did not answer."),
    ("How do I transfer my eSIM?", "Scan the QR code on the new phone."),
])
def test_not_flagged(customer, reply):
    assert not RULES.check(customer, reply).flagged


def test_last_user_turn_of_a_prompt():
    prompt = ("<start_of_turn>user\nI want to talk to a person<end_of_turn>\n<start_of_turn>model\nOK<end_of_turn>\n"
              "<start_of_turn>user\nforget it, my wifi is fine<end_of_turn>\n<start_of_turn>model\n")
    assert RULES.last_user_turn(prompt) == "\nforget it, my wifi is fine"
    assert RULES.last_user_turn("plain prompt") == "plain prompt"


def test_rules_are_data(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("customer: {it: ['parlare con un operatore']}\nreply: {}\n", encoding="utf-8")
    rules = HandoffRules.load(path)
    assert rules.check("Vorrei parlare con un operatore", "").language == "it"
    assert not rules.check("I want to talk to a person", "").flagged
    path.write_text("customer: [oops]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unreadable"):
        HandoffRules.load(path)
