"""Quantized base weights (`--weights int8|int4`): a small-batch fast path for CPU decode.

A decode step with one or a few rows reads every weight once per token, so it is bound by memory bandwidth;
reading int8 or int4 weights instead of bf16 ones makes it 2-5x faster per layer here. At more rows the
quantized kernels lose to the dense bf16 GEMM, so each linear layer keeps both forms and picks one per call by
the number of rows in it:

- int8: `torch.ops.aten._weight_int8pack_mm`, symmetric per output channel (one scale per row of W);
- int4: `torch.ops.aten._weight_int4pack_mm_for_cpu`, asymmetric groups of 32 input columns (a scale and a zero
  per group, the tinygemm layout: w = (q - 8) * scale + zero), packed by `_convert_weight_to_int4pack_for_cpu`.

The dense form is the *dequantized* weight, written over the original one: both paths compute the same model,
only the kernel differs, so a request's tokens do not depend on the batch it shares (up to float rounding).
The extra memory is the packed copy only: about 0.5 (int8) or 0.31 (int4) of the bf16 size of the quantized
layers. The LM head is quantized too (the embedding it is tied to takes the dequantized table as well).

The LoRA product is untouched: adapters wrap the base linear layers (serve.engine.lora_slots.MultiLoraLinear),
and this module only replaces what each wrapper calls as its `base`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("supportkit.engine")

WEIGHTS = ("bf16", "int8", "int4")
INT4_GROUP = 32
# Calls with at most this many rows (tokens) use the quantized kernel. Measured on the embedded model's shapes on
# a 2-core AVX-512 CPU (benchmarks/quant_bench.py): the decoder layers' quantized kernels win up to 4 rows and
# lose from 8-16 on; the LM head in int4 wins up to 8 rows (1.9x at 8), in int8 up to 4.
DECODER_MAX_ROWS = 4
HEAD_MAX_ROWS = {"int8": 4, "int4": 8}
_SLICE_ROWS = 16384


class WeightsError(ValueError):
    pass


def check_weights(weights: str, device: str) -> str:
    if weights not in WEIGHTS:
        raise WeightsError(f"--weights must be one of {', '.join(WEIGHTS)} (got {weights!r})")
    if weights != "bf16" and not str(device).startswith("cpu"):
        raise WeightsError(
            f"--weights {weights} uses CPU kernels; on {device} serve with --weights bf16 (the default)"
        )
    return weights


def quantize_int8(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (q [N, K] int8, scales [N] in `dtype`)."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(dtype)
    q = torch.round(w / scales.float()[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales.float()[:, None]


def quantize_int4(w: torch.Tensor, dtype: torch.dtype, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in groups of `group` input columns: (q [N, K] int32 in 0..15, scales [N, K/group] and
    zeros [N, K/group] stacked as [..., 2] in `dtype`). Scale and zero are rounded to `dtype` first and q is
    computed from the rounded values, so that dequantizing reproduces what the kernel computes."""
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12).to(dtype)
    zero = (lo + 8 * scale.float()).to(dtype)  # the kernel's zero is the value of q = 8
    low = zero.float() - 8 * scale.float()
    q = torch.round((g - low[..., None]) / scale.float()[..., None]).clamp(0, 15).to(torch.int32)
    return q.reshape(n, k), torch.stack([scale, zero], dim=-1)


def dequantize_int4(q: torch.Tensor, scale_zero: torch.Tensor, group: int = INT4_GROUP) -> torch.Tensor:
    n, k = q.shape
    scale, zero = scale_zero[..., 0].float(), scale_zero[..., 1].float()
    return ((q.reshape(n, k // group, group).float() - 8) * scale[..., None] + zero[..., None]).reshape(n, k)


class QuantizedLinear(nn.Module):
    """A linear layer with a packed int8/int4 weight for calls of few rows and the dequantized dense weight
    (`weight`, a Parameter in the model's dtype, possibly shared with a tied embedding) for the others."""

    def __init__(self, linear: nn.Linear, weights: str, max_rows: int):
        super().__init__()
        w = linear.weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.mode, self.max_rows, self.dtype = weights, max_rows, w.dtype
        self.quantized_calls = 0  # how many calls took the quantized kernel (tests and benchmarks read it)
        qs, params = [], []
        # In slices of rows, so that the float32 temporaries of a 150k-row LM head stay small; the dequantized
        # values are written in place: a tied embedding keeps sharing them, and requires_grad stays as the
        # engine set it (frozen bf16 weights take a slower CPU GEMM path at batch 8).
        with torch.no_grad():
            for start in range(0, w.shape[0], _SLICE_ROWS):
                part = w[start:start + _SLICE_ROWS]
                if weights == "int8":
                    q, p = quantize_int8(part, w.dtype)
                    part.copy_(dequantize_int8(q, p))
                else:
                    q, p = quantize_int4(part, w.dtype)
                    part.copy_(dequantize_int4(q, p))
                    if q.shape[0] % 16:  # the packing wants whole tiles of 16 output rows: pad, and cut on output
                        pad = 16 - q.shape[0] % 16
                        q = torch.cat([q, q.new_zeros(pad, q.shape[1])])
                        p = torch.cat([p, p.new_zeros(pad, *p.shape[1:])])
                    q = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
                qs.append(q)
                params.append(p)
        self.register_buffer("qweight", torch.cat(qs))
        if weights == "int8":
            self.register_buffer("scales", torch.cat(params))
        else:  # the kernel wants [K/group, N, 2]
            self.register_buffer("scale_zero", torch.cat(params).transpose(0, 1).contiguous())
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > self.max_rows:
            return F.linear(x, self.weight, self.bias)
        self.quantized_calls += 1
        shape = x.shape
        x2 = x.reshape(rows, self.in_features).to(self.dtype).contiguous()
        if self.mode == "int8":
            y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scales)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.qweight, INT4_GROUP, self.scale_zero)
            if y.shape[1] != self.out_features:
                y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, weights={self.mode}, max_rows={self.max_rows}"


def quantize_model(model: nn.Module, weights: str, device: str,
                   decoder_max_rows: int | None = None, head_max_rows: int | None = None) -> dict:
    """Quantize the base linear layers under the LoRA wrappers and the LM head, in place, after
    `wrap_linear_layers`. Returns what was done (for logs and benchmarks): layers, bytes added."""
    check_weights(weights, device)
    if weights == "bf16":
        return {"weights": "bf16", "layers": 0, "extra_bytes": 0}
    from serve.engine.lora_slots import MultiLoraLinear

    rows = DECODER_MAX_ROWS if decoder_max_rows is None else decoder_max_rows
    head_rows = HEAD_MAX_ROWS[weights] if head_max_rows is None else head_max_rows
    group = INT4_GROUP if weights == "int4" else 1

    def fits(m) -> bool:  # int4 groups need the input width in whole groups
        return m.in_features % group == 0

    done: list[QuantizedLinear] = []
    skipped: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, MultiLoraLinear) and isinstance(module.base, nn.Linear):
            if not fits(module):
                skipped.append(name)
                continue
            module.base = QuantizedLinear(module.base, weights, rows)
            done.append(module.base)
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and fits(head):
        quantized_head = QuantizedLinear(head, weights, head_rows)
        model.set_output_embeddings(quantized_head)
        done.append(quantized_head)
    else:
        skipped.append("lm_head")
    if skipped:
        log.warning("kept unquantized (shapes the %s kernel cannot take): %s", weights, ", ".join(skipped))
    extra = sum(b.numel() * b.element_size() for m in done for b in m.buffers())
    log.info("weights %s: %d layers quantized, %.1f MB of packed weights added", weights, len(done), extra / 1e6)
    return {"weights": weights, "layers": len(done), "extra_bytes": extra, "skipped": skipped}
