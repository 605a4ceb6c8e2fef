"""The offline generator: support conversations composed from the glossary, with no model at all.

Each conversation is drawn from a random generator seeded by (seed, scenario id, sample index), so the same
settings always give the same dataset. Wording varies through several phrasings per part (greeting, empathy,
explanation, cause, steps, escalation, closing), the order and number of steps, and one- or two-turn shapes
(in the latter the agent first asks for one quick check and the customer reports back).
"""

from __future__ import annotations

import random

from train.data.glossary import Scenario

GREETINGS = ["Hello.", "Hi!", "Good morning.", "Hello there.", "Hi,", ""]
QUESTIONS = [
    "What can I do?", "Can you help me?", "How do I fix this?", "Is there a problem on your side?",
    "What should I check?", "Any idea what is going on?", "Could you look into it?",
]
REMOTE_OPENERS = [
    "I am away from home and my family tells me that",
    "I am travelling and I just heard that at home",
]
EMPATHY = [
    "I am sorry to hear that {problem}.",
    "Thank you for contacting us, and sorry for the trouble with {short}.",
    "I understand how frustrating it is when {problem}.",
    "Thanks for the details; let us sort out {short} together.",
    "Sorry about that, I will help you with {short}.",
]
CONTEXT_NOTES = {
    "home": ["", "", "Since everyone at home shares the connection, it helps to test with one device at a time."],
    "mobile": ["", "You can do most of these checks from your phone while on the move.",
               "When you are on the move, note where it happens, as coverage changes along the way."],
    "business": ["", "Since your business depends on it, I will treat this as a priority.",
                 "As a business customer you also have the priority support line if it comes back."],
}
EXPLAIN = [
    "To explain quickly: {lower}",
    "A word on {term}: {lower}",
    "Some background: {lower}",
    "{definition}",
]
CAUSE = [
    "From what you describe, the most likely cause is {name}: {explanation}.",
    "This usually points to {name}; {explanation}.",
    "In cases like yours, it is often {name}, meaning {explanation}.",
    "My first guess is {name}: {explanation}.",
]
STEPS_INTRO = ["Please try the following:", "Here is what I suggest:", "Let us go step by step:", "Could you:"]
ESCALATE = ["{escalation}.", "If these steps do not help, {escalation}.", "Should it continue, {escalation}."]
CLOSINGS = [
    "Let me know how it goes.", "Is there anything else I can help you with?",
    "Tell me the result and we will take it from there.", "I will stay available in this chat if you need me.", "",
]
FIRST_CHECK = [
    "Before anything else, could you {check}? Tell me what you see.",
    "Let us start with one quick check: please {check}, and tell me the result.",
    "First, could you {check}? That will tell us where the problem is.",
]
FOLLOW_UPS = [
    "I did that and it is still the same. {hint}.",
    "Done, nothing changed. {hint}.",
    "I checked, everything looks normal but the problem is still there. {hint}.",
    "Still not working. {hint}.",
]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is an acronym (FTTH, ONT, 4G)."""
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and first.upper() == first else text[:1].lower() + text[1:]


def _opening(rng: random.Random, sc: Scenario) -> str:
    symptom = sc.term.symptom
    if sc.context.id == "mobile" and sc.term.domain == "fixed":
        opener = rng.choice(REMOTE_OPENERS)
    else:
        opener = rng.choice(sc.context.openers)
    greeting = rng.choice(GREETINGS)
    if greeting.endswith(","):
        opener = _lower_first(opener)
    parts = [greeting, f"{opener} {symptom}."]
    if rng.random() < 0.6:
        parts.append(_sentence(sc.cause.customer))
    parts.append(rng.choice(QUESTIONS))
    text = " ".join(p for p in parts if p)
    return text[:1].upper() + text[1:]


def _steps(rng: random.Random, sc: Scenario, with_check: bool) -> str:
    steps = list(sc.cause.steps)
    keep = rng.randint(2, len(steps))
    steps = steps[:keep]
    if with_check:
        steps.insert(rng.randint(0, len(steps)), sc.term.check)
    if rng.random() < 0.5:
        listed = "\n".join(f"{i}. {_sentence(s)}" for i, s in enumerate(steps, 1))
        return rng.choice(STEPS_INTRO) + "\n" + listed + "\n"
    return rng.choice(STEPS_INTRO) + " " + "; then ".join(s.rstrip(".") for s in steps) + "."


def _diagnosis(rng: random.Random, sc: Scenario, with_check: bool) -> list[str]:
    return [
        rng.choice(CAUSE).format(name=sc.cause.name, explanation=sc.cause.explanation),
        _steps(rng, sc, with_check),
        _escalation(rng, sc.cause.escalation),
    ]


def _escalation(rng: random.Random, text: str) -> str:
    if text.startswith("if "):  # already conditional: "if the cables are fine, I can ..."
        return _sentence(text)
    return _sentence(rng.choice(ESCALATE).format(escalation=text))


def _join(parts: list[str]) -> str:
    """Sentences joined by spaces; a numbered list keeps its line breaks and ends its paragraph."""
    return " ".join(p for p in parts if p).replace("\n ", "\n").strip()


def compose(sc: Scenario, rng: random.Random, system: str) -> list[dict[str, str]]:
    """One conversation for a scenario: system prompt, then one or two user/assistant exchanges."""
    problem = _lower_first(sc.term.symptom.replace("my ", "your ").replace("I ", "you ").replace(" me ", " you "))
    empathy = rng.choice(EMPATHY).format(problem=problem, short=f"your {sc.term.term.split(' (')[0]}")
    explain = rng.choice(EXPLAIN).format(
        term=sc.term.term, definition=sc.term.definition, lower=_lower_first(sc.term.definition)
    )
    explain = explain if rng.random() < 0.75 else ""
    note = rng.choice(CONTEXT_NOTES.get(sc.context.id, [""]))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": _opening(rng, sc)}]
    if rng.random() < 0.35:
        first = [empathy, explain, rng.choice(FIRST_CHECK).format(check=sc.term.check)]
        messages.append({"role": "assistant", "content": _join(first)})
        follow = rng.choice(FOLLOW_UPS).format(hint=_sentence(sc.cause.customer).rstrip("."))
        messages.append({"role": "user", "content": follow})
        second = ["Thanks for checking.", *_diagnosis(rng, sc, with_check=False), note, rng.choice(CLOSINGS)]
        messages.append({"role": "assistant", "content": _join(second)})
    else:
        reply = [empathy, explain, *_diagnosis(rng, sc, with_check=True), note, rng.choice(CLOSINGS)]
        messages.append({"role": "assistant", "content": _join(reply)})
    return messages


def generate_offline(scenarios: list[Scenario], per_scenario: int, system: str, seed: int = 0):
    """Yield (scenario, sample index, messages) for every scenario, `per_scenario` conversations each."""
    for sc in scenarios:
        for k in range(per_scenario):
            rng = random.Random(f"{seed}:{sc.id}:{k}")
            yield sc, k, compose(sc, rng, system)
