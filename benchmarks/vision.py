"""Greedy-generation throughput under VHR and VAR on tiny VLMs, as a ratio to none.

Measured in one run on the same batch of image prompts, alternating the settings within each
repeat so that machine load hits all of them alike; reports the median over repeats. VHR's
time includes its selection (one lockstep forward of twice the batch at the prompt); the
`VHR after selection` row subtracts that forward, timed alone (`divergence`). VAR runs with
tau = 2.5 so that the random tiny models have sinks to move (at 20 they have none). Targets
(issue 12): VHR >= 0.9 after its selection forward, VAR >= 0.6.

    OMP_NUM_THREADS=1 python benchmarks/vision.py [--new-tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from interp.interventions import VAR, VHR, VarConfig
from interp.interventions.vhr import divergence
from interp.models import Model
from interp.tiny_models import tiny_idefics3, tiny_llava, tiny_llava_next

BUILDERS: dict[str, Callable[..., Model]] = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "idefics3": tiny_idefics3,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    print(
        f"{args.new_tokens} new tokens, batch {args.batch}, {args.layers} layers, median of"
        f" {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'model':<11} {'setting':<22} {'seconds':>8} {'ratio':>6}")
    for name, build in BUILDERS.items():
        for setting, seconds, ratio in _measure(build(n_layers=args.layers), args):
            print(f"{name:<11} {setting:<22} {seconds:>8.4f} {ratio:>6.2f}")


def _measure(model: Model, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8) for i in range(args.batch)]
    texts = [f"<image> describe picture {i}, please." for i in range(args.batch)]
    inputs = model.prepare(texts, images)
    settings = {
        "none": contextlib.nullcontext,
        "VHR": lambda: VHR().applied(model),
        "VAR (tau 2.5)": lambda: VAR(VarConfig(tau=2.5)).applied(model),
    }

    def generate() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.hf.generate(
                **inputs,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
            )
        return time.perf_counter() - start

    def select() -> float:
        start = time.perf_counter()
        divergence(model, inputs)
        return time.perf_counter() - start

    for context in settings.values():  # warm-up
        with context():
            generate()
    times: dict[str, list[float]] = {name: [] for name in settings}
    selection = []
    for _ in range(args.repeats):
        for name, context in settings.items():
            with context():
                times[name].append(generate())
        selection.append(select())
    median = {name: statistics.median(values) for name, values in times.items()}
    median["VHR after selection"] = median["VHR"] - statistics.median(selection)
    base = median["none"]
    return [(name, seconds, base / seconds) for name, seconds in median.items()]


if __name__ == "__main__":
    main()
