"""Judge validity of the opt-in offline judges, served by the kit's own engine on this machine.

For each prepared judge model: start `supportkit serve --model DIR` on loopback, run
`supportkit eval validate-judge` against it (the panel-offline judge's prompts and verdict format), stop the
server. Per-model outputs (figures and the verdict journal, so a cut run resumes) go to
benchmarks/results/judge-validity/<model>/; the summary of all of them to benchmarks/results/judge_validity.md
and .json.

    .venv/bin/python benchmarks/judge_validity.py --model ~/.cache/supportkit/models/qwen2.5-coder-1.5b-instruct
    .venv/bin/python benchmarks/judge_validity.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.server_process import ServerProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PER_MODEL = RESULTS / "judge-validity"


def run_one(model: Path, questions: int, pairwise_questions: int, max_batch_size: int, concurrency: int) -> None:
    out = PER_MODEL / model.name
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        server = ServerProcess(["--model", str(model), "--adapters", str(Path(tmp) / "no-adapters"),
                                "--max-batch-size", str(max_batch_size)], log=Path(tmp) / "server.log")
        with server:
            server.wait_ready(timeout=900)
            print(f"{model.name}: server ready in {time.time() - started:.0f} s", file=sys.stderr)
            cmd = [sys.executable, "-m", "supportkit.cli", "eval", "validate-judge", "--endpoint", server.url,
                   "--out", str(out.relative_to(ROOT)), "--questions", str(questions),
                   "--pairwise-questions", str(pairwise_questions), "--concurrency", str(concurrency),
                   "--protocols", "rubric,pairwise"]
            subprocess.run(cmd, cwd=ROOT, check=True)
    result = json.loads((out / "judge_validity.json").read_text())
    result["run"]["served_by"] = (f"supportkit serve --model {model} --max-batch-size {max_batch_size} "
                                  f"(bf16 on CPU where native, the kit's LocalEngine)")
    (out / "judge_validity.json").write_text(json.dumps(result, indent=2) + "\n")


def summary() -> None:
    results = [json.loads(p.read_text()) for p in sorted(PER_MODEL.glob("*/judge_validity.json"))]
    (RESULTS / "judge_validity.json").write_text(json.dumps({"judges": results}, indent=2) + "\n")
    lines = ["# Offline judge validity", "",
             "Each opt-in judge model, served by the kit's engine, asked through the panel-offline judge's prompts "
             "about planted answers of known quality order (eval/configs/judge-validity/planted.jsonl). "
             "Reproduce with `benchmarks/judge_validity.py --model DIR` (it runs the command shown per judge). "
             "Wall times are from a 2-core machine shared with other jobs, and a resumed run counts only its own "
             "verdicts: they say how long it took here, not how fast the judge is.", "",
             "| model | passes | tau (95% CI) | ref > wrong fact | position consistency | malformed | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rank, pair, parse = r["rank_recovery"], r["pairwise"] or {}, r["malformed"]
        ci = rank.get("kendall_tau_ci")
        lines.append(
            f"| {r['judge']['model']} | {'yes' if r['assessment']['passed'] else 'no'} | "
            f"{rank['kendall_tau']:.2f} ({ci[0]:.2f}, {ci[1]:.2f}) | {rank['separated']['reference>wrong_fact']:.2f} | "
            f"{pair.get('position_consistency', float('nan')):.2f} | {parse['malformed_rate']:.3f} | "
            f"{r['run']['wall_s_this_run']} |")
    for p in sorted(PER_MODEL.glob("*/judge_validity.md")):
        lines += ["", "---", ""] + ["#" + line if line.startswith("#") else line for line in p.read_text().splitlines()]
    (RESULTS / "judge_validity.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", default=[], help="Prepared judge model directory")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--pairwise-questions", type=int, default=6)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    # `timeout` sends SIGTERM: exit through the context managers so that the server and the client stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.summary_only:
        for model in args.model:
            run_one(model.expanduser(), args.questions, args.pairwise_questions, args.max_batch_size, args.concurrency)
    summary()


if __name__ == "__main__":
    main()
