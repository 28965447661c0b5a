"""Greedy-generation throughput under interventions, as a ratio to no intervention.

Measured in one run on the same prompt, alternating the settings within each repeat so that
machine load hits all of them alike; reports the median over repeats. Targets (issue 4):
HeadScale on 20 heads >= 0.9, ACT on 20 heads >= 0.6.

    OMP_NUM_THREADS=1 python benchmarks/interventions.py [--new-tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch

from interp.heads import HeadSet
from interp.interventions import HeadScale
from interp.interventions.act import ACT, act_candidates
from interp.models import load_model

PROMPT = (
    "Review: The soup was delightful and everyone loved it.\nSentiment: positive\n\n"
    "Review: The hotel was dreadful and I left early.\nSentiment: negative\n\n"
    "Write a short story about a fox who finds a lost key in the forest and returns it."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: SmolLM2-135M)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heads", type=int, default=20)
    args = parser.parse_args()

    model = load_model(args.model)
    pool = list(act_candidates(model.geometry))
    pick = np.random.default_rng(0).choice(len(pool), args.heads, replace=False)
    heads = HeadSet(pool[i] for i in sorted(pick))
    settings = {
        "none": contextlib.nullcontext,
        f"HeadScale x{args.heads} (alpha=0)": lambda: HeadScale(heads, alpha=0.0).applied(model),
        f"ACT x{args.heads}": lambda: ACT(heads).applied(model),
    }
    ids = model.encode(PROMPT).input_ids

    def generate() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=model.tokenizer.pad_token_id,
            )
        return args.new_tokens / (time.perf_counter() - start)

    generate()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, context in settings.items():
            with context():
                rates[name].append(generate())
    base = statistics.median(rates["none"])
    print(f"{model.spec}: prompt {ids.shape[1]} tokens, {args.new_tokens} new, batch 1,")
    print(f"median of {args.repeats}, torch threads {torch.get_num_threads()}; heads {heads}")
    print(f"{'setting':<26} {'tokens/s':>9} {'ratio':>6}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<26} {rate:>9.1f} {rate / base:>6.2f}")


if __name__ == "__main__":
    main()
