"""Run the eval job end to end on the embedded Gemma 3 270M, on CPU, and keep the report.

Targets: the base model and two random LoRA adapters of increasing strength (planted damage: the stronger
one should rank lower), with manifests whose validation losses are planted in the opposite order. Judges:
panel-local.yaml (reference judge + the same server's base model as LLM judge). Usage:

    .venv/bin/python benchmarks/eval_gemma_demo.py [--limit 2] [--max-tokens 64] [--out benchmarks/eval_gemma_demo]

Answers are cut at --max-tokens (64) and verdicts at twice that. Needs `supportkit model prepare` done once.
Not a test: it takes minutes on an idle CPU, far longer on a busy one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length; the judge gets twice as many")
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "eval_gemma_demo")
    args = parser.parse_args()

    from common.manifest import AdapterManifest, Energy, Metrics, write_manifest
    from common.models import resolve_model_dir
    from common.tiny import build_random_adapter

    model = resolve_model_dir(None)
    store = Path(tempfile.mkdtemp(prefix="eval-demo-store-"))
    for name, scale, loss, kwh in (("mild", 0.01, 0.68, 0.05), ("strong", 0.04, 0.50, 0.12)):
        build_random_adapter(model, store / name, r=8, target_modules=("q_proj", "v_proj"), seed=1, scale=scale)
        write_manifest(store / name, AdapterManifest(name=name, metrics=Metrics(val_loss=loss),
                                                     energy=Energy(kwh={"total": kwh}, sources={"total": "estimate"})))
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "supportkit.cli", "serve", "--port", str(args.port),
                               "--adapters", str(store), "--dtype", "float32"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(1)
        started = time.monotonic()
        # panel-local.yaml with shorter answers and verdicts, so that a CPU run stays within minutes
        panel_text = (ROOT / "eval" / "configs" / "panel-local.yaml").read_text()
        panel_text = panel_text.replace("  max_tokens: 256", f"  max_tokens: {args.max_tokens}")
        panel_text = panel_text.replace("    max_tokens: 384", f"    max_tokens: {2 * args.max_tokens}")
        panel = Path(tempfile.mkdtemp(prefix="eval-demo-panel-")) / "panel.yaml"  # prompts: eval/configs/
        panel.write_text(panel_text)
        env = {**os.environ, "SUPPORTKIT_JUDGE_URL": url}
        subprocess.run([sys.executable, "-m", "eval.cli", "run", "--endpoint", url, "--panel", str(panel),
                        "--out", str(args.out), "--limit", str(args.limit)], cwd=ROOT, env=env, check=True)
        print(f"eval run took {time.monotonic() - started:.0f} s")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
