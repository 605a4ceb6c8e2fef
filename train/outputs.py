"""What a run leaves in its adapter directory besides the weights: the manifest and the loss curves."""

from __future__ import annotations

import json
from pathlib import Path

from common.manifest import LOSSES_FILE, AdapterManifest, BaseModelRef, Energy, LoraSettings, Metrics, TrainingSettings
from train.config import TrainConfig

CURVES_NAME = "losses.png"
CONFIG_NAME = "train_config.yaml"


def loss_history(history: list[dict]) -> dict[str, list[list[float]]]:
    """The loss curves as [step, loss] pairs: train (logged every logging_steps) and val (every eval_steps)."""
    return {"train": [[h["step"], h["loss"]] for h in history if "loss" in h],
            "val": [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h]}


def write_losses(history: list[dict], adapter_dir: Path) -> Path:
    path = adapter_dir / LOSSES_FILE
    path.write_text(json.dumps(loss_history(history)) + "\n")
    return path


def plot_losses(history: list[dict], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = loss_history(history)
    train, val = curves["train"], curves["val"]
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def build_manifest(cfg: TrainConfig, result, energy: dict, command: str, started: str, finished: str) -> AdapterManifest:
    from common.models import model_fingerprint
    from train.recipe import init_adapter_ref, perplexity

    return AdapterManifest(
        name=cfg.name,
        base_model=BaseModelRef(name=result.model_name, fingerprint=model_fingerprint(result.model_dir)),
        lora=LoraSettings(r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, target_modules=list(cfg.target_modules)),
        training=TrainingSettings(
            learning_rate=cfg.learning_rate, epochs=cfg.epochs, steps=result.global_step, seed=cfg.seed,
            dataset_fingerprint=result.dataset_fingerprint, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            max_length=cfg.max_length, lr_scheduler=cfg.lr_scheduler, train_examples=result.train_examples,
            val_examples=result.val_examples, train_tokens=result.train_tokens, data=cfg.data,
            device=result.device, resumed_from=result.resumed_from, train_runtime_s=result.train_runtime_s,
            reply_tokens=result.reply_tokens, init_adapter=init_adapter_ref(cfg),
            max_steps=cfg.max_steps if cfg.max_steps > 0 else None, max_train_minutes=cfg.max_train_minutes,
        ),
        metrics=Metrics(train_loss=result.train_loss, val_loss=result.val_loss, perplexity=perplexity(result.val_loss)),
        energy=Energy(kwh=energy["kwh"], sources=energy["sources"], duration_s=energy["duration_s"],
                      co2_kg=energy.get("co2_kg"), hardware=energy["hardware"]),
        system_prompt=result.system_prompt or None,
        chat_template=result.chat_template,
        knowledge=result.knowledge,
        command=command,
        started_at=started,
        finished_at=finished,
    )
