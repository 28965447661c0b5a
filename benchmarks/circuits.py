"""Circuit-method costs, as ratios measured in one run on the default model and IOI prompts.

Activation patching of every head (`circuits.patching.activation_patching`: a batched sweep
whose patched runs start at the patched layer from the cached clean resid_pre) against the
naive loop: one full patched forward of all prompts per head, in batches of the same size,
both keeping only the last position's logits. Both include recording the corrupted run's z.
The goal is at most 0.6x the naive loop's time; the two must give the same logit
differences, and the script prints the largest gap.

Attribution patching of every head (`circuits.attribution.attribution_patching`: the
corrupted run's z, one clean forward and one backward) against one plain clean forward of
the same prompts (all positions' logits, as `model.hf(**batch)` gives). Goal: at most 3x.

Usage: python benchmarks/circuits.py [--prompts 100] [--batch-size 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# This script's name shadows the `circuits` package, and an editable install's finder comes
# after the path: the repository root takes the script folder's place at the front, and the
# folder goes last, where `measure` is still found.
sys.path.append(sys.path[0])
sys.path.insert(0, str(Path(sys.path.pop(0)).resolve().parent))
from measure import measure

from circuits.attribution import attribution_patching
from circuits.metrics import logit_difference
from circuits.patching import activation_patching
from circuits.tasks import ioi
from interp.encoding import Encoding
from interp.hook_points import HeadPatch, patched, record
from interp.models import Model, load_model


@torch.no_grad()
def naive_patching(model: Model, task, batch_size: int) -> torch.Tensor:
    """[layer, head] mean patched logit difference, one full forward per head and batch."""
    geometry = model.geometry
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(geometry.n_layers)]
    source = record(model, task.corrupted, names)
    out = torch.zeros(geometry.n_layers, geometry.n_heads, dtype=torch.float64)
    n = len(task)
    for layer in range(geometry.n_layers):
        for head in range(geometry.n_heads):
            total = 0.0
            for start in range(0, n, batch_size):
                rows = range(start, min(n, start + batch_size))
                batch = Encoding(
                    task.clean.input_ids[start : rows.stop],
                    task.clean.attention_mask[start : rows.stop],
                )
                part = {names[layer]: source[names[layer]][start : rows.stop]}
                patches = [HeadPatch(row=i, layer=layer, head=head) for i in range(len(rows))]
                with patched(model.hf, part, patches):
                    logits = model.hf(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
                total += float(logit_difference(logits, task.select(list(rows))).double().sum())
            out[layer, head] = total / n
    return out


def activation_patching_vs_naive(model: Model, task, batch_size: int, device: str) -> None:
    warm = task.select([0, 1])
    activation_patching(model, warm, batch_size=batch_size)
    naive_patching(model, warm, batch_size)
    results = {}
    ours = measure(
        lambda: results.setdefault("ours", activation_patching(model, task, batch_size=batch_size)),
        device,
    )
    naive = measure(
        lambda: results.setdefault("naive", naive_patching(model, task, batch_size)), device
    )
    table = results["ours"].data
    ours_ld = torch.tensor(table["logit_difference"].to_numpy()).view_as(results["naive"])
    gap = float((ours_ld - results["naive"]).abs().max())
    n_heads = model.geometry.n_layers * model.geometry.n_heads
    print(f"activation patching, {n_heads} heads x {len(task)} IOI prompts (batch {batch_size})")
    print(f"  batched sweep      {ours.seconds:8.2f} s")
    print(f"  naive loop         {naive.seconds:8.2f} s   ({n_heads} full patched forwards)")
    print(f"  ratio              {ours.seconds / naive.seconds:8.3f} x   (goal <= 0.6)")
    print(f"  max |LD gap|       {gap:.2e}")


def attribution_vs_forward(model: Model, task, device: str) -> None:
    """All heads' attribution patching vs one clean forward, measured in the same run.

    Both are warmed up at full size first: the first backward of a large batch in a process
    spends several seconds faulting in its graph's memory (11.9 s, then 6.3 s, at 100
    prompts on CPU), which the forward's own warm-up already hides from its arm.
    """
    attribution_patching(model, task)

    def forward() -> None:
        with torch.no_grad():
            model.hf(**task.clean)

    forward()
    plain = measure(forward, device)
    ours = measure(lambda: attribution_patching(model, task), device)
    n_heads = model.geometry.n_layers * model.geometry.n_heads
    print(f"attribution patching, {n_heads} heads x {len(task)} IOI prompts (one batch)")
    print(f"  attribution        {ours.seconds:8.2f} s")
    print(f"  clean forward      {plain.seconds:8.2f} s")
    print(f"  ratio              {ours.seconds / plain.seconds:8.3f} x   (goal <= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_model(device=args.device)
    task = ioi(model, args.prompts)
    print(f"default model on {args.device}, torch threads {torch.get_num_threads()}")
    activation_patching_vs_naive(model, task, args.batch_size, args.device)
    attribution_vs_forward(model, task, args.device)


if __name__ == "__main__":
    main()
