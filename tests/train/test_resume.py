"""Kill-and-resume: a run killed (SIGKILL) right after a checkpoint, then started again with the same command,
ends with the same adapter as an uninterrupted run, at the same step."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.train.conftest import ROOT, cli

# The run itself, with one extra callback that kills the process hard once checkpoint `kill_at` is on disk.
KILLER = """
import os, signal, sys
from transformers import TrainerCallback
from train.config import load_config
from train.job import run_job

class KillAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)

run_job(load_config(sys.argv[1]), sys.argv[2], sys.argv[3], progress=False, callbacks=[KillAfterCheckpoint()])
"""


def _weights(adapter: Path) -> dict[str, torch.Tensor]:
    return load_file(adapter / "adapter_model.safetensors")


def test_killed_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path, tiny_config):
    config = tiny_config(name="resumable", max_steps=6, save_steps=2, eval_steps=3, dropout=0.1)
    store_a, store_b = tmp_path / "store-a", tmp_path / "store-b"

    cli("train", "run", "--config", str(config), "--out", str(store_a), "--work-dir", str(tmp_path / "work-a"),
        "--no-progress")

    work_b = tmp_path / "work-b"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(config), str(store_b), str(work_b), "4"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (work_b / "checkpoints" / "checkpoint-4").is_dir()
    assert not (store_b / "resumable").exists()  # nothing half-written reached the store
    assert not [p for p in store_b.iterdir() if not p.name.startswith(".")] if store_b.exists() else True

    cli("train", "run", "--config", str(config), "--out", str(store_b), "--work-dir", str(work_b), "--no-progress")

    a, b = store_a / "resumable", store_b / "resumable"
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert mb["training"]["resumed_from"] == "checkpoint-4"
    assert ma["training"]["steps"] == mb["training"]["steps"] == 6
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-4, atol=1e-6), name
    assert abs(ma["metrics"]["val_loss"] - mb["metrics"]["val_loss"]) < 1e-4
    # The run actually trained: the LoRA B matrices (initialised to zero) moved
    assert any(w.abs().max() > 0 for n, w in wa.items() if "lora_B" in n)
