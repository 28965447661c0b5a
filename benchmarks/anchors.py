"""Preplan/anchor analysis cost vs a plain forward, and vs caching every layer's pattern.

For one trace of N tokens (the shipped problems' text repeated; the first 64 tokens are the
prompt), prints the analyzer's time (`probes.anchors.run`: pass 1 and pass 2) and peak
memory above the level before the call, next to a plain forward of the full model with
logits (the analyzer's pass 2 keeps its logits, for entropy), each in its own fresh
process in the same run, and the memory that holding all layers' float32 patterns would take
(layers x heads x N^2 x 4 bytes). Goals at 4k tokens: peak memory <= 1/10 of all patterns,
time <= 3x the plain forward.

Usage: python benchmarks/anchors.py [--lengths 1024 4096] [--device cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import analyzer_vs_forward, measure, report

from interp.models import load_model
from probes import anchors
from probes.anchor_traces import Trace, load_problems, problem_prompt

PROMPT_TOKENS = 64


def trace_of(model, n_tokens: int) -> Trace:
    """The shipped problems' text, tokenized and repeated to exactly n_tokens."""
    text = " ".join(problem_prompt(p) for p in load_problems())
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return Trace("bench", tuple((ids * (n_tokens // len(ids) + 1))[:n_tokens]), PROMPT_TOKENS)


def child(mode: str, n_tokens: int, device: str) -> None:
    """Measure one call in this fresh process and report it."""
    model = load_model(device=device)
    trace, warm = trace_of(model, n_tokens), trace_of(model, 2 * PROMPT_TOKENS)
    config = anchors.AnchorConfig(batch_size=1)
    with torch.no_grad():
        if mode == "forward":
            ids = torch.tensor([trace.ids], device=device)
            model.hf(torch.tensor([warm.ids], device=device))
            report(measure(lambda: model.hf(ids), device))
        else:
            anchors.run(model, [warm], config)
            report(measure(lambda: anchors.run(model, [trace], config), device))


if __name__ == "__main__":
    analyzer_vs_forward(__file__, "anchors", child, [1024, 4096], __doc__)
