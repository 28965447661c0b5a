"""Sink analyzer cost vs a plain forward, and vs caching every layer's attention pattern.

Prints, per context length, the analyzer's time and peak memory as ratios to a plain
(SDPA) forward of the base model (no LM head, like the analyzer) on the same tokens, each
measured in its own fresh process in the same run, next to the memory that caching all
layers' float32 patterns would take (layers x heads x N^2 x 4 bytes): what
`output_attentions=True` or a full TransformerLens cache holds.

Usage: python benchmarks/sinks.py [--lengths 1024 2048 4096] [--device cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import analyzer_vs_forward, measure, report

from interp.models import load_model
from interp.prompts import data_path, load_prompts
from probes import sinks


def token_ids(model, n_tokens: int) -> torch.Tensor:
    """The shipped prompts' tokens repeated to exactly n_tokens."""
    base = " ".join(load_prompts(data_path("prompts", "sinks.jsonl")))
    ids = model.tokenizer(base, add_special_tokens=False)["input_ids"]
    return torch.tensor((ids * (n_tokens // len(ids) + 1))[:n_tokens])


def child(mode: str, n_tokens: int, device: str) -> None:
    """Measure one call in this fresh process and report it."""
    model = load_model(device=device)
    ids = token_ids(model, n_tokens)
    text = model.tokenizer.decode(ids)
    with torch.no_grad():
        if mode == "forward":
            model.hf.base_model(ids[:64][None].to(device))  # warm-up
            report(measure(lambda: model.hf.base_model(ids[None].to(device)), device))
        else:
            sinks.run(model, [model.tokenizer.decode(ids[:64])])  # warm-up
            report(measure(lambda: sinks.run(model, [text]), device))


if __name__ == "__main__":
    analyzer_vs_forward(__file__, "sinks", child, [1024, 2048, 4096], __doc__)
