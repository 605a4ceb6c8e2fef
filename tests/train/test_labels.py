"""Loss only on the assistant's tokens (checked on the labels), per-batch padding, and the head-only-where-loss
shortcut giving the same loss as the model's own."""

import pytest
import torch

from common.records import Conversation
from train.examples import IGNORE, PadToLongest, tokenize

MESSAGES = [
    {"role": "system", "content": "You are a telecom support agent."},
    {"role": "user", "content": "My fibre connection drops every evening."},
    {"role": "assistant", "content": "Please restart the router and check the ONT light."},
    {"role": "user", "content": "Still the same."},
    {"role": "assistant", "content": "I will hand you over to a human agent."},
]
CONV = Conversation(id="x", messages=MESSAGES, scenario={"term": "ftth", "cause": "outage", "context": "home"},
                    split="train")
# A ChatML template without {% generation %} markers, like many production models ship.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _target_text(tok, ex):
    return tok.decode([t for t in ex["labels"] if t != IGNORE])


def test_labels_are_exactly_the_assistant_turns(tok):
    ex = tokenize(tok, CONV, 1024)
    assert len(ex["labels"]) == len(ex["input_ids"])
    target = _target_text(tok, ex)
    assert target == (MESSAGES[2]["content"] + "<end_of_turn>" + MESSAGES[4]["content"] + "<end_of_turn>")
    for m in MESSAGES[:2] + MESSAGES[3:4]:
        assert m["content"] not in target
    # Unmasked positions carry the input token itself (the model shifts them), masked ones are ignored
    assert all(lab in (IGNORE, tid) for lab, tid in zip(ex["labels"], ex["input_ids"]))


def test_labels_without_generation_markers_use_the_prefix_rule(tok):
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = CHATML
    ex = tokenize(tok, CONV, 1024)
    target = _target_text(tok, ex)
    assert MESSAGES[2]["content"] in target and MESSAGES[4]["content"] in target
    assert MESSAGES[1]["content"] not in target and "Still the same" not in target


def test_truncation_keeps_no_example_without_targets(tok):
    assert tokenize(tok, CONV, 8) is None


def test_padding_is_to_the_longest_in_the_batch():
    collate = PadToLongest(pad_token_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [5]}])
    assert batch["input_ids"].shape == (2, 3)
    assert batch["labels"][1].tolist() == [5, IGNORE, IGNORE]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_selected_logits_loss_equals_the_models_own_loss(tiny_model, tok):
    """The recipe's shortcut (LM head only where labels are) must not change the loss or its gradient."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from train.recipe import _trainer_class

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    short = CONV.model_copy(update={"messages": CONV.messages[:3]})
    batch = PadToLongest(tok.pad_token_id)([tokenize(tok, CONV, 1024), tokenize(tok, short, 1024)])
    assert (batch["attention_mask"] == 0).any()  # the padded row is part of the check
    trainer = _trainer_class()(model=model, args=TrainingArguments(output_dir="/tmp/unused", report_to=[], use_cpu=True))
    model.eval()
    ours = trainer.compute_loss(model, dict(batch))
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (ours, theirs)
