"""Training benchmarks: s/step, tokens/s and peak memory of the recipe vs a plain Trainer + peft baseline.

    .venv/bin/python benchmarks/train_bench.py                 # tiny model + default model, then a short sweep
    .venv/bin/python benchmarks/train_bench.py --models tiny   # quick
    .venv/bin/python benchmarks/train_bench.py --skip-sweep

Each (model, variant) runs in its own subprocess so that peak memory (ru_maxrss, or CUDA max allocated) is its
own. Both variants train the same LoRA on the same tokenized conversations with the same collator (padding to
the batch's longest); the baseline computes the model's usual loss over full logits, the recipe applies the LM
head only at assistant positions. The first step is a warm-up and is not timed.
Results: benchmarks/results/train_bench.json and .md (with the machine's load average: a shared CPU is noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from common.cpu import describe  # noqa: E402


def one(model_dir: str, variant: str, steps: int, batch: int, examples: int) -> dict:
    """Runs in a child process: time `steps` optimizer steps after one warm-up step."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from train.config import TrainConfig
    from train.examples import PadToLongest, load_records, select_split, tokenize_all
    from train.recipe import _trainer_class, pick_device

    device = pick_device()
    cfg = TrainConfig(model=model_dir, max_train_examples=examples)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = load_records(cfg)
    data = tokenize_all(tok, select_split(rows, "train", examples, 0), 1024)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))

    times, tokens = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.t = time.perf_counter()
            self.seen = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            tokens.append(state.num_input_tokens_seen - self.seen)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps + 1, learning_rate=1e-4,
            report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            use_cpu=device == "cpu", bf16=device == "cuda", remove_unused_columns=False,
            include_num_input_tokens_seen="non_padding", seed=0, data_seed=0,
        )
        cls = _trainer_class() if variant == "recipe" else Trainer
        trainer = cls(model=model, args=args, train_dataset=data, data_collator=PadToLongest(tok.pad_token_id),
                      callbacks=[Clock()])
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    t, n = sum(times[1:]), sum(tokens[1:])
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": variant, "device": device, "steps_timed": len(times) - 1, "batch": batch,
            "s_per_step": round(t / max(1, len(times) - 1), 3), "tokens_per_s": round(n / t, 1) if t else None,
            "tokens_per_step": round(n / max(1, len(times) - 1)), "peak_memory_mib": round(peak)}


def sweep_energy(model_dir: str, runs: str, steps: int) -> list[dict]:
    """A short sweep (a few configurations, a few steps each) through the CLI; energy from each manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "supportkit.cli", "train", "sweep", "--out", f"{tmp}/store", "--only", runs,
               "--no-progress", f"model={model_dir}", f"max_steps={steps}", "offline_per_scenario=1",
               "offline_scenarios=60", "max_val_examples=8", "batch_size=2", "grad_accum=1",
               f"eval_steps={steps}", f"save_steps={steps}"]
        env = {**os.environ, "SUPPORTKIT_CACHE": f"{tmp}/cache"}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        from train.report import collect

        return [{k: r.get(k) for k in ("name", "r", "modules", "steps", "val_loss", "kwh", "energy_source",
                                       "co2_kg", "duration_s")} for r in collect(Path(tmp) / "store")]


def markdown(res: dict) -> str:
    out = ["# Training benchmarks", "", f"Machine: {res['machine']}; load average at start {res['load_start']}, "
           f"at end {res['load_end']} (a shared CPU: timings are noisy).", "",
           "| model | variant | device | s/step | tokens/s | tokens/step | peak memory (MiB) |",
           "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        out.append(f"| {r['model']} | {r['variant']} | {r['device']} | {r['s_per_step']} | {r['tokens_per_s']} | "
                   f"{r['tokens_per_step']} | {r['peak_memory_mib']} |")
    out += ["", "| model | recipe tokens/s / baseline tokens/s |", "|---|---|"]
    for model, ratio in res["speedup"].items():
        out.append(f"| {model} | {ratio}x |")
    if res.get("sweep"):
        out += ["", f"Short sweep ({res['sweep_note']}):", "",
                "| run | r | modules | steps | val loss | kWh | source | CO2 kg | duration s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in res["sweep"]:
            out.append(f"| {r['name']} | {r['r']} | {r['modules']} | {r['steps']} | {r['val_loss']:.4f} | "
                       f"{r['kwh']:.3g} | {r['energy_source']} | {r['co2_kg']:.3g} | {r['duration_s']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--models", default="tiny,default", help="tiny, default, or a model directory (comma list)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-runs", default="0,1,2")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]), int(a.child[4]))))
        return

    from common.models import default_model_dir
    from common.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp())
    tiny = str(build_tiny_model(tmp / "tiny-qwen2", "qwen2"))
    dirs = {"tiny": tiny, "default": str(default_model_dir())}
    res = {"machine": describe(), "load_start": os.getloadavg()[0], "runs": [], "speedup": {}}
    for name in a.models.split(","):
        model_dir = dirs.get(name, name)
        by_variant = {}
        for variant in ("baseline", "recipe"):
            examples = a.batch * (a.steps + 1)
            proc = subprocess.run([sys.executable, __file__, "--child", model_dir, variant, str(a.steps), str(a.batch),
                                   str(examples)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{name}/{variant} failed:\n{proc.stderr[-3000:]}")
            row = {"model": name, **json.loads(proc.stdout.strip().splitlines()[-1])}
            by_variant[variant] = row
            res["runs"].append(row)
            print(row, flush=True)
        res["speedup"][name] = round(by_variant["recipe"]["tokens_per_s"] / by_variant["baseline"]["tokens_per_s"], 2)
    if not a.skip_sweep:
        res["sweep"] = sweep_energy(tiny, a.sweep_runs, 4)
        res["sweep_note"] = f"sweep.yaml runs {a.sweep_runs} on the tiny model, 4 steps each, CPU"
    res["load_end"] = os.getloadavg()[0]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "train_bench.json").write_text(json.dumps(res, indent=2) + "\n")
    (a.out / "train_bench.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
