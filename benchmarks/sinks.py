"""Sink analyzer cost vs a plain forward, and vs caching every layer's attention pattern.

Prints, per context length, the analyzer's time and peak memory as ratios to a plain
(SDPA) forward on the same tokens, measured in the same run, next to the memory that
caching all layers' float32 patterns would take (layers x heads x N^2 x 4 bytes), which is
what `output_attentions=True` or a full TransformerLens cache holds. Both the analyzer and
the plain forward run the base model (no LM head).

Usage: python benchmarks/sinks.py [--lengths 1024 2048 4096] [--device cpu]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import gib, measure

from interp.models import load_model
from interp.prompts import data_path, load_prompts
from probes import sinks


def long_text(model, n_tokens: int) -> str:
    """Shipped prompts repeated until the text has exactly n_tokens tokens."""
    base = " ".join(load_prompts(data_path("prompts", "sinks.jsonl")))
    ids = model.tokenizer(base, add_special_tokens=False)["input_ids"]
    ids = (ids * (n_tokens // len(ids) + 1))[:n_tokens]
    text = model.tokenizer.decode(ids)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_model(device=args.device)
    g = model.geometry
    print(f"model {model.spec} on {args.device}: {g.n_layers} layers x {g.n_heads} heads")
    header = (
        f"{'tokens':>7} {'forward s':>9} {'sinks s':>8} {'time x':>7} {'forward mem':>12}"
        f" {'sinks mem':>10} {'mem x':>6} {'all patterns':>13} {'saving':>7}"
    )
    print(header)
    for n_tokens in args.lengths:
        ids = model.encode(long_text(model, n_tokens))[None].to(model.device)
        text = model.tokenizer.decode(ids[0])
        with torch.no_grad():
            model.hf.base_model(ids)  # warm-up; no LM head, like the analyzer
            plain = measure(lambda ids=ids: model.hf.base_model(ids), args.device, repeat=2)
        gc.collect()
        analyzer = measure(lambda text=text: sinks.run(model, [text]), args.device, repeat=2)
        patterns = g.n_layers * g.n_heads * len(ids[0]) ** 2 * 4
        memory_ratio = analyzer.peak_bytes / max(plain.peak_bytes, 1)
        print(
            f"{len(ids[0]):>7} {plain.seconds:>9.2f} {analyzer.seconds:>8.2f}"
            f" {analyzer.seconds / plain.seconds:>7.2f} {gib(plain.peak_bytes):>12}"
            f" {gib(analyzer.peak_bytes):>10} {memory_ratio:>6.2f}"
            f" {gib(patterns):>13} {patterns / max(analyzer.peak_bytes, 1):>6.0f}x"
        )
    print(f"memory: {plain.method}; 'all patterns' = layers x heads x N^2 x 4 bytes (float32)")


if __name__ == "__main__":
    main()
