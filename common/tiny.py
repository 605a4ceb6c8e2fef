"""Tiny random models with a real (trained in-process) tokenizer, for smoke tests without real weights.

Two families with the same linear module names: Qwen2 (full attention) and Gemma3 (sliding-window layers
next to full ones; a short window so that tests cross it). Building one takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.chat_template import END, KIT_CHAT_TEMPLATE, START

FAMILIES = ("qwen2", "gemma3")
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", START, END]

_CORPUS = """\
My fibre connection drops every evening and the ONT light blinks red.
Hello, I am sorry to hear that your internet is slow. Let us check your router together.
Please restart the router, wait two minutes, then check whether the WAN light is green.
My 4G data does not work abroad; roaming is enabled on my plan.
Your eSIM profile can be downloaded again from the QR code in your customer area.
The VDSL sync rate is low because the line is long; a technician can check the copper pair.
I want to port my number to your network. The porting code is sent by SMS.
VoLTE calls fail in my house; Wi-Fi calling may help while we investigate the cell.
If the problem persists, I will hand you over to a human agent who can open a ticket.
Latency is high on the Wi-Fi channel 6; try channel 1 or 11, or the 5 GHz band.
Check the APN settings: the access point name must match the one of your operator.
Thank you for your patience. Is there anything else I can help you with today?
"""


def train_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE trained on a short telecom support corpus, wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        additional_special_tokens=[START, END],
    )
    fast.chat_template = KIT_CHAT_TEMPLATE
    return fast


def tiny_config(family: str, vocab_size: int):
    if family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        )
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
            sliding_window=32, layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
        )
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def build_tiny_model(out: str | Path, family: str = "qwen2", seed: int = 0) -> Path:
    """Write a tiny random causal LM (hidden 64, 2 layers) with tokenizer and chat template to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out)
    tok = train_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok)))
    # Untied embeddings and a wider init than the default, so that greedy decoding is varied rather than one
    # repeated token (Gemma's scaled, tied embeddings collapse onto a single token otherwise).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.config.name_or_path = f"tiny-{family}"
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(END)],
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "supportkit.json").write_text(json.dumps({"name": f"tiny-{family}", "license": "random weights"}))
    return out


def build_random_adapter(
    model_dir: str | Path, out: str | Path, r: int = 8, alpha: int = 16,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 0, scale: float = 0.5,
    rank_pattern: dict[str, int] | None = None,
) -> Path:
    """A PEFT LoRA adapter with non-zero random A and B (so it changes the output), saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(base, LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(target_modules), rank_pattern=rank_pattern or {}))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, scale)
    peft_model.save_pretrained(out)
    return Path(out)
