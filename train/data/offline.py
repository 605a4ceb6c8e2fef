"""The offline generator: support conversations composed from the glossary, with no model at all.

Each conversation is drawn from a random generator seeded by (seed, scenario id, sample index), so the same
settings always give the same dataset.

The agent follows the evidence:
- a fault where the customer's message carries the cue for its cause (40% of them): the agent repeats that
  evidence and names the cause it points to ("Since you say ..., the most likely cause is ..."), then gives
  its steps and what it will do next;
- a fault without the cue: the agent names no cause. Either it asks the one targeted question for the term's
  most likely cause (or the term's check) and names a cause only once the customer's answer gives evidence
  for one; or it walks the term's checks, its likely causes in order (the same for every conversation about
  the term), and says what each result would mean ("if ..., it is ...");
- an informational scenario ("what does ... mean", "how do I ...", "can I ..."): a direct answer from the
  glossary (the term's answer or definition), never a fault script.
Customer wording varies through several symptom phrasings per term, several cue phrasings per cause,
statements and questions ("why is ...", "how do I fix ..."), and details that are evidence for nothing
("I already restarted it twice."), so that an extra sentence is not itself a reason to name a cause.
"""

from __future__ import annotations

import random

from train.data.glossary import Cause, Glossary, Scenario

CUE_SHARE = 0.4  # faults whose opening message carries the evidence for the cause
ASK_FIRST_SHARE = 0.45  # faults without the cue where the agent asks one question before anything else
DETAIL_SHARE = 0.5  # openings without the cue that add a detail which is evidence for no cause (half as many with it)
NO_ANSWER_SHARE = 0.3  # asked about another cause than the real one, the customer gives no evidence at all

GREETINGS = ["Hello.", "Hi!", "Good morning.", "Hello there.", "Hi,", "", "", ""]
QUESTIONS = [
    "What can I do?", "Can you help me?", "How do I fix this?", "Is there a problem on your side?",
    "What should I check?", "Any idea what is going on?", "Could you look into it?", "Why is that?",
    "Why is this happening?", "What does that mean?",
]
REMOTE_OPENERS = [
    "I am away from home and my family tells me that",
    "I am travelling and I just heard that at home",
]
NEUTRAL_DETAILS = [
    "I already restarted it twice.", "It was working fine last week.", "I have had this contract for years.",
    "I tried switching it off and on again.", "This is really annoying.", "I need it for work tomorrow.",
    "It has happened a few times now.", "I am not very technical.", "My partner noticed it first.",
    "I called about something else last month.", "I checked the app but found nothing.",
]
EMPATHY = [
    "I am sorry to hear that {problem}.",
    "Thank you for contacting us, and sorry for the trouble with {short}.",
    "I understand how frustrating it is when {problem}.",
    "Thanks for the details; let us sort out {short} together.",
    "Sorry about that, I will help you with {short}.",
    "",
]
CONTEXT_NOTES = {
    "home": ["", "", "Since everyone at home shares the connection, it helps to test with one device at a time."],
    "mobile": ["", "You can do most of these checks from your phone while on the move.",
               "When you are on the move, note where it happens, as coverage changes along the way."],
    "business": ["", "Since your business depends on it, I will treat this as a priority.",
                 "As a business customer you also have the priority support line if it comes back."],
}
EXPLAIN = ["To explain quickly: {lower}", "A word on {short}: {lower}", "Some background: {lower}", "{definition}"]
# Only used when the customer has given the evidence for the cause, which the agent repeats ({cue}).
CAUSE = [
    "Since you say {cue}, the most likely cause is {name}: {explanation}.",
    "You mention that {cue}; that points to {name}: {explanation}.",
    "What you say, that {cue}, suggests {name}, meaning {explanation}.",
    "Given that {cue}, this is probably {name}: {explanation}.",
]
NO_CAUSE_YET = [
    "I cannot tell the cause from this alone, so let us go through the checks, most likely first:",
    "Several things can cause this, so let us check them in order:",
    "Without more details I will not guess; here are the checks, in order, and what each result means:",
]
WALK_END = [
    "Tell me what you find and I will take it from there.",
    "Let me know what each check shows and I will tell you the next step.",
    "Once you know which of these it is, I can fix it with you or from our side.",
]
ASK_INTRO = ["To find the cause, one question first:", "One question before we go further:", "Let me ask one thing first:"]
CHECK_ASK = [
    "Before anything else, could you {check}? Tell me what you see.",
    "Let us start with one quick check: please {check}, and tell me the result.",
]
FOLLOW_UPS = ["{cue}.", "Yes, {cue_lower}.", "Now that you mention it, {cue_lower}.", "I checked. Also, {cue_lower}."]
OTHER_FOLLOW_UPS = ["No, nothing like that. But {cue_lower}.", "Not that I know of. Although {cue_lower}.",
                    "No. Now that I think of it, though, {cue_lower}."]
NO_EVIDENCE_FOLLOW_UPS = ["No, nothing like that.", "Not that I know of.", "No, I do not think so.",
                          "I checked, and nothing looks different."]
NOTHING_YET = ["Thanks, that rules one thing out.", "All right, so it is not that."]
STEPS_INTRO = ["Please try the following:", "Here is what I suggest:", "Let us go step by step:", "Could you:"]
ESCALATE = ["{escalation}.", "If these steps do not help, {escalation}.", "Should it continue, {escalation}."]
CLOSINGS = [
    "Let me know how it goes.", "Is there anything else I can help you with?",
    "Tell me the result and we will take it from there.", "I will stay available in this chat if you need me.", "",
]
INFO_QUESTIONS = [
    "What does {short} mean?", "What is {short}?", "Can you explain what {short} is?",
    "I keep seeing '{short}' in my contract. What is that?", "What exactly is {term}?",
    "Quick question: what is {short} and why does it matter?", "Why is {short} important for my service?",
]
INFO_TAILS = ["If you want to check it yourself, {check}.", "", ""]
INFO_CLOSINGS = ["Is there anything else I can help you with?", "Does that answer your question?", "", ""]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is an acronym (FTTH, ONT, 4G) or 'I'."""
    first = text.split(" ", 1)[0]
    return text if first == "I" or (len(first) > 1 and first.upper() == first) else text[:1].lower() + text[1:]


def _you(text: str) -> str:
    """The customer's words as the agent repeats them ("my box" -> "your box")."""
    return _lower_first(text.replace("my ", "your ").replace("I ", "you ").replace(" me ", " you ")
                        .replace("I am ", "you are ").replace("you am ", "you are "))


def _fault_opening(rng: random.Random, sc: Scenario, cue: str | None) -> str:
    symptom = rng.choice(sc.term.phrasings)
    greeting = rng.choice(GREETINGS)
    shape = rng.random()
    detail = rng.choice(NEUTRAL_DETAILS) if rng.random() < (DETAIL_SHARE / 2 if cue else DETAIL_SHARE) else ""
    cue_text = " ".join(p for p in [_sentence(cue) if cue else "", detail] if p)
    if shape < 0.55:
        opener = (rng.choice(REMOTE_OPENERS) if sc.context.id == "mobile" and sc.term.domain == "fixed"
                  else rng.choice(sc.context.openers))
        if greeting.endswith(","):
            opener = _lower_first(opener)
        parts = [greeting, f"{opener} {_lower_first(symptom)}.", cue_text, rng.choice(QUESTIONS)]
    elif shape < 0.8:
        parts = [greeting, _sentence(symptom), cue_text, rng.choice(["Why is that?", "Why would that be?",
                                                                      "How do I fix it?", "Can I fix this myself?"])]
    else:
        parts = [greeting, rng.choice(["Can you help?", "I need help.", "Quick question."]),
                 f"{_sentence(symptom)[:-1]}{', and ' + _lower_first(cue) if cue else ''}.", detail]
    text = " ".join(p for p in parts if p)
    return text[:1].upper() + text[1:]


def _steps(rng: random.Random, cause: Cause, check: str | None) -> str:
    steps = list(cause.steps)[: rng.randint(2, len(cause.steps))]
    if check:
        steps.insert(rng.randint(0, len(steps)), check)
    if rng.random() < 0.5:
        listed = "\n".join(f"{i}. {_sentence(s)}" for i, s in enumerate(steps, 1))
        return rng.choice(STEPS_INTRO) + "\n" + listed + "\n"
    return rng.choice(STEPS_INTRO) + " " + "; then ".join(s.rstrip(".") for s in steps) + "."


def _escalation(rng: random.Random, text: str) -> str:
    if text.startswith("if "):  # already conditional: "if the cables are fine, I can ..."
        return _sentence(text)
    return _sentence(rng.choice(ESCALATE).format(escalation=text))


def _diagnosis(rng: random.Random, cause: Cause, cue: str, check: str | None) -> list[str]:
    """Naming the cause: only ever called with the customer's evidence for it (`cue`), which the agent repeats."""
    named = rng.choice(CAUSE).format(cue=_you(cue), name=cause.name, explanation=cause.explanation)
    return [named, _steps(rng, cause, check), _escalation(rng, cause.escalation)]


def _walk_checks(rng: random.Random, sc: Scenario, likely: list[Cause]) -> str:
    """The term's check, then one check per likely cause of the term, in order, with what its result would
    mean; no cause asserted."""
    items = [_sentence(sc.term.check)]
    items += [f"{_sentence(c.steps[0])[:-1]}: if {c.sign}, it is {c.name}." for c in likely]
    listed = "\n".join(f"{i}. {text}" for i, text in enumerate(items, 1))
    return rng.choice(NO_CAUSE_YET) + "\n" + listed + "\n"


def _join(parts: list[str]) -> str:
    """Sentences joined by spaces; a numbered list keeps its line breaks and ends its paragraph."""
    return " ".join(p for p in parts if p).replace("\n ", "\n").strip()


def _explain(rng: random.Random, sc: Scenario) -> str:
    text = rng.choice(EXPLAIN).format(short=sc.term.short, definition=sc.term.definition,
                                      lower=_lower_first(sc.term.definition))
    return text if rng.random() < 0.6 else ""


def compose_fault(sc: Scenario, rng: random.Random, likely: list[Cause]) -> list[dict[str, str]]:
    """`likely`: the term's likely causes, most likely first (what an agent checks without evidence)."""
    cue = rng.choice(sc.cause.evidence) if rng.random() < CUE_SHARE else None
    opening = _fault_opening(rng, sc, cue)
    problem = _you(rng.choice(sc.term.phrasings))
    empathy = rng.choice(EMPATHY).format(problem=problem, short=f"your {sc.term.short}")
    note = rng.choice(CONTEXT_NOTES.get(sc.context.id, [""]))
    messages = [{"role": "user", "content": opening}]

    def say(*parts: str) -> None:
        messages.append({"role": "assistant", "content": _join(list(parts))})

    if cue:
        say(empathy, _explain(rng, sc), *_diagnosis(rng, sc.cause, cue, sc.term.check), note, rng.choice(CLOSINGS))
        return messages
    if rng.random() >= ASK_FIRST_SHARE:
        say(empathy, _explain(rng, sc), _walk_checks(rng, sc, likely), rng.choice(WALK_END), note)
        return messages
    # One targeted question, about the term's most likely cause or its check.
    asked = likely[0] if likely and rng.random() < 0.7 else None
    ask = (f"{rng.choice(ASK_INTRO)} {asked.ask}" if asked else rng.choice(CHECK_ASK).format(check=sc.term.check))
    say(empathy, _explain(rng, sc), ask)
    evidence = rng.choice(sc.cause.evidence)
    other = asked is not None and asked.id != sc.cause.id  # asked about another cause than the real one
    if other and rng.random() < NO_ANSWER_SHARE:
        messages.append({"role": "user", "content": rng.choice(NO_EVIDENCE_FOLLOW_UPS)})
        say(rng.choice(NOTHING_YET), _walk_checks(rng, sc, likely[1:]), rng.choice(WALK_END))
        return messages
    follow = rng.choice(OTHER_FOLLOW_UPS if other else FOLLOW_UPS)
    messages.append({"role": "user", "content": follow.format(cue=_sentence(evidence)[:-1],
                                                              cue_lower=_lower_first(evidence))})
    say("Thanks, that helps.", *_diagnosis(rng, sc.cause, evidence, None), note, rng.choice(CLOSINGS))
    return messages


def compose_info(sc: Scenario, rng: random.Random) -> list[dict[str, str]]:
    """A question about the term (or how to do something with it), answered directly from the glossary."""
    t = sc.term
    howto = bool(t.questions) and rng.random() < 0.6
    question = rng.choice(t.questions) if howto else rng.choice(INFO_QUESTIONS).format(short=t.short, term=t.term)
    greeting = rng.choice(GREETINGS)
    prefix = rng.choice(["", "", f"{sc.context.openers[0]} "]) if not howto else ""
    question = _lower_first(question) if prefix and prefix.strip().endswith(",") else question
    opening = " ".join(p for p in [greeting, prefix + question] if p)
    if howto:
        answer = f"Yes, {_lower_first(t.answer)}" if question.startswith("Can I") else t.answer
        body = [answer] + ([t.definition] if rng.random() < 0.3 else [])
    else:
        body = [t.definition, rng.choice(INFO_TAILS).format(check=t.check)]
    reply = [*(_sentence(b) for b in body if b), rng.choice(INFO_CLOSINGS)]
    return [{"role": "user", "content": opening[:1].upper() + opening[1:]},
            {"role": "assistant", "content": _join(reply)}]


def compose(sc: Scenario, rng: random.Random, system: str, glossary: Glossary) -> list[dict[str, str]]:
    """One conversation for a scenario: the system prompt, then one or two user/assistant exchanges."""
    turns = compose_info(sc, rng) if sc.informational else compose_fault(sc, rng, glossary.likely_causes(sc.term))
    return [{"role": "system", "content": system}, *turns]


def generate_offline(scenarios: list[Scenario], per_scenario: int, system: str, glossary: Glossary, seed: int = 0):
    """Yield (scenario, sample index, messages) for every scenario, `per_scenario` conversations each.
    `glossary`: the one the scenarios come from (each term's likely causes are the checks without evidence)."""
    for sc in scenarios:
        for k in range(per_scenario):
            rng = random.Random(f"{seed}:{sc.id}:{k}")
            yield sc, k, compose(sc, rng, system, glossary)
