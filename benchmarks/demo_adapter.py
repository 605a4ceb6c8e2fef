"""Does the shipped demo adapter answer like a support agent and end its turns? Checked through the real server.

Serves the embedded Gemma 3 270M with the shipped adapter store (`supportkit serve` with no options), sends the
20 demo questions (eval/configs/questions-demo.jsonl) through the OpenAI chat route, greedy, to the adapter and
to the base model, and records how many replies end with the end-of-turn token (finish_reason "stop") rather
than running to the token limit, reply lengths, energy, and a few replies to read.

    .venv/bin/python benchmarks/demo_adapter.py [--max-tokens 320]

Results: benchmarks/results/demo_adapter.json and .md. Needs `supportkit model prepare` done once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.server_process import ServerProcess  # noqa: E402
from eval.questions import load_questions  # noqa: E402

QUESTIONS = ROOT / "eval" / "configs" / "questions-demo.jsonl"
ADAPTER = "telecom-support"


async def ask_all(url: str, model: str, questions, max_tokens: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=1800) as client:
        async def one(q):
            r = await client.post("/v1/chat/completions", json={
                "model": model, "messages": q.messages,
                "temperature": 0, "max_tokens": max_tokens})
            r.raise_for_status()
            body = r.json()
            return {"id": q.id, "question": q.text, "answer": body["choices"][0]["message"]["content"],
                    "finish_reason": body["choices"][0]["finish_reason"],
                    "tokens": body["usage"]["completion_tokens"], "joules": body["energy"]["joules"]}
        return await asyncio.gather(*(one(q) for q in questions))


def summary(replies: list[dict]) -> dict:
    ended = [r for r in replies if r["finish_reason"] == "stop"]
    return {"replies": len(replies), "ended_turns": len(ended), "ended_share": len(ended) / len(replies),
            "median_tokens": statistics.median(r["tokens"] for r in replies),
            "median_tokens_ended": statistics.median(r["tokens"] for r in ended) if ended else None,
            "joules_per_reply": statistics.mean(r["joules"] for r in replies)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    questions = load_questions([QUESTIONS])
    manifest = json.loads((ROOT / "serve" / "adapters" / ADAPTER / "manifest.json").read_text())
    server = ServerProcess([]).wait_ready(300)
    url = server.url
    try:
        base_name = httpx.get(url + "/info").json()["model_id"]
        results = {}
        for model in (ADAPTER, base_name):
            t0 = time.perf_counter()
            replies = asyncio.run(ask_all(url, model, questions, args.max_tokens))
            results[model] = {"summary": summary(replies), "seconds": time.perf_counter() - t0, "replies": replies}
            print(model, json.dumps(results[model]["summary"]), flush=True)
    finally:
        server.stop()
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "max_tokens": args.max_tokens,
           "adapter_training": manifest["training"], "adapter_metrics": manifest["metrics"],
           "adapter_command": manifest.get("command"), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_adapter.json").write_text(json.dumps(out, indent=2) + "\n")
    a, b = results[ADAPTER]["summary"], results[base_name]["summary"]
    lines = [
        f"# Shipped demo adapter `{ADAPTER}` on {base_name} (greedy, max {args.max_tokens} tokens)", "",
        f"Measured {out['date']} with `python benchmarks/demo_adapter.py`: the 20 demo questions through "
        "`/v1/chat/completions` of `supportkit serve` (no options).", "",
        "| | replies ending their turn | median tokens | median tokens (ended) | J/reply (estimate on CPU) |",
        "|---|---|---|---|---|",
        *[f"| {name} | {s['ended_turns']}/{s['replies']} | {s['median_tokens']:g} | {s['median_tokens_ended'] or '-'} "
          f"| {s['joules_per_reply']:.0f} |" for name, s in ((ADAPTER, a), (base_name, b))], "",
        f"Adapter: {manifest['training']['steps']} steps on {manifest['training']['train_examples']} conversations, "
        f"val loss {manifest['metrics']['val_loss']:.3f}. Reproduce: `{manifest.get('command')}`.", "",
        "## Replies of the adapter (first three)", "",
    ]
    for r in results[ADAPTER]["replies"][:3]:
        lines += [f"**{r['question']}** ({r['tokens']} tokens, {r['finish_reason']})", "", "> " +
                  r["answer"].strip().replace("\n", "\n> "), ""]
    (args.out / "demo_adapter.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
