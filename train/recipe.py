"""The LoRA supervised fine-tuning recipe: setup -> train (resumable) -> evaluate -> save, on transformers' Trainer.

Loss is on the assistant's tokens only (labels from the chat template's {% generation %} mask). With
`select_logits` the LM head is applied only at those positions: the output projection of a 262k-token
vocabulary is most of the compute of a small model, and the other positions' logits are thrown away anyway.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from train.config import TrainConfig
from train.examples import IGNORE, PadToLongest, load_records, select_split, split_fingerprint, tokenize_all


class RecipeError(Exception):
    """The run cannot start (no data, bad model dir, ...); the message says what to do."""


@dataclass
class RunResult:
    model_dir: Path
    model_name: str
    device: str
    system_prompt: str
    chat_template: str
    dataset_fingerprint: str
    train_examples: int
    val_examples: int
    train_tokens: int
    global_step: int
    train_loss: float | None
    val_loss: float | None
    log_history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None
    train_runtime_s: float | None = None
    knowledge: dict | None = None  # the manifest's `knowledge` section when the prompts were grounded
    reply_tokens: dict | None = None  # lengths of the training replies (the demo sizes its token limit from them)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _trainer_class():
    import torch
    from transformers import Trainer

    class KitTrainer(Trainer):
        """Trainer whose loss is computed on assistant positions only, at the LM head too (select_logits)."""

        select_logits = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.select_logits:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            causal = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"][:, 1:]
            keep = labels != IGNORE
            hidden = causal.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          use_cache=False).last_hidden_state
            logits = causal.get_output_embeddings()(hidden[:, :-1][keep]).float()
            cap = getattr(causal.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            total = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="sum")
            denom = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
            loss = total / denom.to(total.device) if torch.is_tensor(denom) else total / denom
            return (loss, {"loss": loss}) if return_outputs else loss

    return KitTrainer


def training_arguments(cfg: TrainConfig, out_dir: Path, device: str, progress: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, eval_strategy="steps", eval_steps=cfg.eval_steps,
        eval_on_start=cfg.eval_on_start,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, logging_steps=cfg.logging_steps,
        logging_first_step=True, seed=cfg.seed, data_seed=cfg.seed, report_to=[], use_cpu=device == "cpu",
        bf16=_use_bf16(cfg, device), remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=not progress,
        include_num_input_tokens_seen="non_padding",
    )


def _use_bf16(cfg: TrainConfig, device: str) -> bool:
    from common.cpu import native_bf16

    if cfg.dtype == "bfloat16" and device == "cpu" and not native_bf16():
        raise RecipeError("dtype bfloat16 on a CPU without bf16 instructions (AVX512-BF16 or AMX) is emulated "
                          "and ~50x slower than float32: use dtype=auto or dtype=float32")
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and (device == "cuda" or native_bf16()))


def last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def train(cfg: TrainConfig, work_dir: Path, stage_dir: Path, progress: bool = True, callbacks=()) -> RunResult:
    """Train (resuming from the newest checkpoint in work_dir/checkpoints), evaluate, save the adapter to stage_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from common.chat_template import KIT_CHAT_TEMPLATE
    from common.models import ModelError, model_name, resolve_model_dir

    try:
        model_dir = resolve_model_dir(cfg.model)
    except ModelError as exc:
        raise RecipeError(str(exc)) from exc
    device = pick_device()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.chat_template:
        tok.chat_template = KIT_CHAT_TEMPLATE  # base models without one get the kit's Gemma-style turns
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    try:
        rows, system = load_records(cfg)
    except (OSError, ValueError) as exc:
        raise RecipeError(str(exc)) from exc
    train_rows = select_split(rows, "train", cfg.max_train_examples, cfg.data_seed)
    val_rows = select_split(rows, "val", cfg.max_val_examples, cfg.data_seed)
    from common.knowledge import KnowledgeError
    from train.grounding import ground_rows, knowledge_for, knowledge_manifest

    try:
        kb = knowledge_for(cfg)
    except KnowledgeError as exc:
        raise RecipeError(str(exc)) from exc
    if kb:
        train_rows, val_rows = ground_rows(train_rows, kb, cfg.knowledge_k), ground_rows(val_rows, kb, cfg.knowledge_k)
    train_ds = tokenize_all(tok, train_rows, cfg.max_length)
    val_ds = tokenize_all(tok, val_rows, cfg.max_length)
    if not train_ds or not val_ds:
        raise RecipeError(f"the dataset has {len(train_ds)} train and {len(val_ds)} val examples; both must be > 0")

    set_seed(cfg.seed)
    dtype = torch.bfloat16 if _use_bf16(cfg, device) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    if cfg.init_adapter:
        model = continue_from(model, cfg)
    else:
        model = get_peft_model(model, LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM"))

    ckpt_dir = work_dir / "checkpoints"
    resume = last_checkpoint(ckpt_dir)
    trainer_cls = _trainer_class()
    trainer = trainer_cls(
        model=model, args=training_arguments(cfg, ckpt_dir, device, progress), train_dataset=train_ds,
        eval_dataset=val_ds, data_collator=PadToLongest(tok.pad_token_id),
        callbacks=[*callbacks, *([_time_budget(cfg.max_train_minutes)] if cfg.max_train_minutes else [])],
    )
    trainer.select_logits = cfg.select_logits
    out = trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate()
    stage_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(stage_dir, safe_serialization=True)
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    return RunResult(
        model_dir=model_dir, model_name=model_name(model_dir), device=device, system_prompt=system,
        chat_template=tok.chat_template, dataset_fingerprint=split_fingerprint(train_rows, val_rows),
        train_examples=len(train_ds), val_examples=len(val_ds),
        train_tokens=int(trainer.state.num_input_tokens_seen or 0), global_step=trainer.state.global_step,
        train_loss=train_losses[-1] if train_losses else out.training_loss, val_loss=metrics.get("eval_loss"),
        log_history=history, resumed_from=os.path.basename(resume) if resume else None,
        train_runtime_s=out.metrics.get("train_runtime"), knowledge=knowledge_manifest(kb, cfg.knowledge_k),
        reply_tokens=reply_token_stats(tok, train_rows),
    )


def _time_budget(minutes: float):
    """Stop after the step that ends past `minutes` of training (this attempt's, not counting a resumed part):
    on a shared machine a run then ends when planned; the manifest records the steps actually done."""
    import time

    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.monotonic() + minutes * 60

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() > self.deadline:
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def continue_from(model, cfg: TrainConfig):
    """The base model with the LoRA weights of `cfg.init_adapter` (safetensors only), trainable: a run that
    continues an earlier adapter. Its LoRA settings must be the config's, so that the manifest tells the truth."""
    import json

    from peft import PeftModel

    path = Path(cfg.init_adapter)
    if not (path / "adapter_model.safetensors").is_file() or not (path / "adapter_config.json").is_file():
        raise RecipeError(f"init_adapter {path} is not a PEFT adapter directory with adapter_model.safetensors")
    saved = json.loads((path / "adapter_config.json").read_text())
    mine = {"r": cfg.r, "lora_alpha": cfg.alpha, "target_modules": sorted(cfg.target_modules)}
    theirs = {"r": saved.get("r"), "lora_alpha": saved.get("lora_alpha"),
              "target_modules": sorted(saved.get("target_modules") or [])}
    if mine != theirs:
        raise RecipeError(f"init_adapter {path} has LoRA settings {theirs}; the config says {mine}")
    return PeftModel.from_pretrained(model, str(path), is_trainable=True, use_safetensors=True)


def init_adapter_ref(cfg: TrainConfig) -> dict | None:
    """What the manifest records about the adapter a run continued from."""
    if not cfg.init_adapter:
        return None
    import hashlib

    path = Path(cfg.init_adapter)
    digest = hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()[:32]
    ref = {"path": str(path), "weights_sha256": digest}
    try:
        from common.manifest import read_manifest

        m = read_manifest(path)
    except ValueError:
        m = None
    if m:
        ref.update(name=m.name, dataset_fingerprint=m.training.dataset_fingerprint if m.training else None,
                   steps=m.training.steps if m.training else None, command=m.command)
    return ref


def reply_token_stats(tok, rows) -> dict | None:
    """Median, 90th percentile and longest assistant reply of the training data, in tokens."""
    import statistics

    lengths = sorted(len(tok(m.content, add_special_tokens=False)["input_ids"])
                     for r in rows for m in r.messages if m.role == "assistant")
    if not lengths:
        return None
    return {"median": int(statistics.median(lengths)), "p90": lengths[int(0.9 * (len(lengths) - 1))],
            "max": lengths[-1]}


def perplexity(loss: float | None) -> float | None:
    return math.exp(min(loss, 50)) if loss is not None else None
