"""The reference judge ranks answers of planted quality: the reference > a degraded answer > an off-topic one."""

import pytest

from eval.questions import DEMO_QUESTIONS, load_questions
from eval.reference_judge import ReferenceJudge

OFFTOPIC = "Our shops are open from nine to six on weekdays, and we sell phone cases in many colours."


def degrade(reference: str) -> str:
    """Keep the first sentence only, and add a vague closing."""
    return reference.split(". ")[0] + ". Let us know if there is anything else."


@pytest.mark.parametrize("method", ["embedding", "rouge"])
def test_planted_quality_order(method):
    judge = ReferenceJudge(method)
    assert judge.method == method  # the embedding model ships in site-packages: no silent fallback here
    questions = load_questions([DEMO_QUESTIONS])[:8]
    for q in questions:
        exact, degraded, offtopic = judge.score([(q.reference, q.reference), (degrade(q.reference), q.reference),
                                                 (OFFTOPIC, q.reference)])
        assert exact > degraded > offtopic, q.id
    assert exact == pytest.approx(1.0, abs=1e-4)
