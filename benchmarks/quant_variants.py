"""Where int4 loses quality on the embedded model: validation perplexity with int4 or int8 on the decoder layers
and the LM head separately (the demo adapter on its 16 validation conversations, as benchmarks/quant_bench.py).

The embedded GGUF stores most decoder weights as Q5_0 (q, k, gate, up; half of v), Q6_K (half of down) or
Q8_0 (the token embedding, tied to the LM head); only attn_output and half of ffn_down are Q4_K. Re-quantizing
the 5-, 6- and 8-bit tensors to int4 is what costs: this script says how much, part by part.

    .venv/bin/python benchmarks/quant_variants.py      # writes benchmarks/results/quant_variants.md
"""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quant_bench as qb  # noqa: E402
from common.models import resolve_model_dir  # noqa: E402
from serve.engine import quantize as Q  # noqa: E402
from serve.engine.local import LocalEngine  # noqa: E402
from serve.engine.lora_slots import MultiLoraLinear  # noqa: E402

VARIANTS = [("bf16", "bf16"), ("int8", "int8"), ("int4", "int4"), ("int4", "int8"), ("int4", "bf16"),
            ("bf16", "int4"), ("int8", "int4")]


def engine(model_dir: Path, decoder: str, head: str) -> LocalEngine:
    e = LocalEngine(model_dir, dtype="bfloat16", max_batch_size=8)
    if decoder != "bf16":
        for module in e.model.modules():
            if isinstance(module, MultiLoraLinear):
                module.base = Q.QuantizedLinear(module.base, decoder, Q.DECODER_MAX_ROWS)
    if head != "bf16":
        e.model.set_output_embeddings(Q.QuantizedLinear(e.model.get_output_embeddings(), head, Q.HEAD_MAX_ROWS[head]))
    e.load_adapter(qb.ADAPTER, qb.ADAPTER_DIR)
    e.slots.warm(e.adapters()[qb.ADAPTER])
    qb.use_adapter(e, True)
    return e


def main() -> None:
    model_dir = resolve_model_dir(None)
    rows, val, base = [], None, None
    for decoder, head in VARIANTS:
        e = engine(model_dir, decoder, head)
        val = val or qb.validation_examples(e.tokenizer, None)
        ppl = qb.val_perplexity(e, val)
        base = base or ppl
        rows.append(f"| {decoder} | {head} | {ppl:.4f} | {100 * (ppl / base - 1):+.2f}% |")
        print(rows[-1], flush=True)
        del e
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# int4 / int8 by part: validation perplexity (gemma-3-270m, demo adapter)", "",
             f"Measured {date} with `python benchmarks/quant_variants.py` on {platform.machine()}, 2 cores. "
             f"Perplexity of the {len(val)} validation conversations of train/configs/demo.yaml (assistant tokens); "
             "the goal for a quantized setting is within 1% of bf16.", "",
             "| decoder layers | LM head (tied embedding) | val perplexity | vs bf16 |", "|---|---|---|---|", *rows]
    (ROOT / "benchmarks" / "results" / "quant_variants.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
