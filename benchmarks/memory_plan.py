"""The memory plan (interp.memory_plan) against measured peaks on the default model.

For each context length and run (plain forward, sinks, retrieval, ACT), a fresh process
loads the model, copies its weights into anonymous memory (a safetensors load maps the
file, and pages read back in during a run would count as growth), warms up on 64 tokens,
resets the peak resident set size (`/proc/self/clear_refs`), makes the call and reports
VmHWM minus the RSS before the call: the live memory the call added at its peak. The
children run with MALLOC_MMAP_THRESHOLD_=65536, so glibc returns freed large blocks at once
and the peak is live tensors, not the allocator's free-page cache (which the plan does not
model; without it a run shows tens of MiB more, varying). Each call is measured twice and
the larger kept.

Usage: python benchmarks/memory_plan.py [--lengths 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch

from interp.interventions.act import ACT
from interp.memory_plan import plan_memory
from interp.models import load_config, load_model
from interp.prompts import data_path, load_prompts
from probes import niah, retrieval, sinks

RUNS = ("forward", "sinks", "retrieval", "act")
ACT_LAYERS = (3, 10, 20)  # every head of these layers: the plan's largest ACT edit
MIB = 2**20


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(key))
    return int(line.split()[1]) * 1024


def peak_above(fn) -> int:
    """Peak RSS growth of `fn()` in bytes, above the RSS before it."""
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS
    fn()
    return _status("VmHWM") - before


def prepared(model, run: str, n_tokens: int) -> tuple[int, Callable[[], object]]:
    """(prompt tokens, the call to measure) of `run` on an n_tokens prompt."""
    if run == "retrieval":
        needles = niah.load_needles()[:1]
        test = niah.build_tests(model, needles, niah.load_haystack(), [n_tokens], 1, 50)[0]
        config = retrieval.RetrievalConfig(max_new_tokens=50)
        return len(test.input_ids), lambda: retrieval.score_tests(model, [test], config)
    base = " ".join(load_prompts(data_path("prompts", "sinks.jsonl")))
    ids = model.tokenizer(base, add_special_tokens=False)["input_ids"]
    ids = torch.tensor((ids * (n_tokens // len(ids) + 1))[:n_tokens])
    if run == "sinks":
        text = model.tokenizer.decode(ids)
        return n_tokens, lambda: sinks.run(model, [text])
    act = ACT([f"L{layer}H{h}" for layer in ACT_LAYERS for h in range(model.geometry.n_heads)])

    @torch.no_grad()
    def forward() -> object:
        if run == "forward":
            return model.hf(ids[None], logits_to_keep=1)
        with act.applied(model):
            return model.hf(ids[None], logits_to_keep=1)

    return n_tokens, forward


def child(run: str, n_tokens: int) -> None:
    model = load_model()
    for param in model.hf.parameters():
        param.data = param.data.clone()
    prepared(model, run, 128)[1]()  # warm-up
    tokens, call = prepared(model, run, n_tokens)
    peak = max(peak_above(call) for _ in range(2))
    print("RESULT " + json.dumps({"peak": peak, "tokens": tokens}), flush=True)


def measured(run: str, n_tokens: int) -> dict[str, int]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    args = [sys.executable, __file__, "--child", run, str(n_tokens)]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    lines = [s for s in done.stdout.splitlines() if s.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{run} at {n_tokens} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    config = load_config()
    print("default model, CPU, float32; MiB above the loaded model (plan: forward + extra)")
    print(f"{'tokens':>7} {'run':<10} {'plan MiB':>9} {'measured':>9} {'plan/meas':>10}")
    for n_tokens in args.lengths:
        for run in RUNS:
            got = measured(run, n_tokens)
            heads = None if run != "act" else config.num_attention_heads
            plan = plan_memory(config, got["tokens"], act_heads_per_layer=heads)
            planned = plan.peak(run) - plan.extra("weights")
            print(
                f"{got['tokens']:>7} {run:<10} {planned / MIB:>9.1f} {got['peak'] / MIB:>9.1f}"
                f" {planned / got['peak']:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
