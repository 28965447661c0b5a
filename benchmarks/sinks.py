"""Sink analyzer cost vs a plain forward, and vs caching every layer's attention pattern.

Prints, per context length, the analyzer's time and peak memory as ratios to a plain
(SDPA) forward of the base model (no LM head, like the analyzer) on the same tokens, each
measured in its own fresh process in the same run, next to the memory that caching all
layers' float32 patterns would take (layers x heads x N^2 x 4 bytes): what
`output_attentions=True` or a full TransformerLens cache holds.

Usage: python benchmarks/sinks.py [--lengths 1024 2048 4096] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import gib, isolated, measure, report

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.device)
        return
    config = load_model().hf.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    print(f"default model on {args.device}: {n_layers} layers x {n_heads} heads")
    print(
        f"{'tokens':>7} {'forward s':>9} {'sinks s':>8} {'time x':>7} {'forward mem':>12}"
        f" {'sinks mem':>10} {'mem x':>6} {'all patterns':>13} {'patterns/sinks':>15}"
    )
    for n_tokens in args.lengths:
        common = ("--device", args.device, "--child")
        plain = isolated(__file__, *common, "forward", str(n_tokens))
        analyzer = isolated(__file__, *common, "sinks", str(n_tokens))
        patterns = n_layers * n_heads * n_tokens**2 * 4
        print(
            f"{n_tokens:>7} {plain.seconds:>9.2f} {analyzer.seconds:>8.2f}"
            f" {analyzer.seconds / plain.seconds:>7.2f} {gib(plain.peak_bytes):>12}"
            f" {gib(analyzer.peak_bytes):>10} {analyzer.peak_bytes / plain.peak_bytes:>6.2f}"
            f" {gib(patterns):>13} {patterns / analyzer.peak_bytes:>14.1f}x",
            flush=True,
        )
    print(f"memory: {plain.method}; all patterns = layers x heads x N^2 x 4 bytes (float32)")


if __name__ == "__main__":
    main()
