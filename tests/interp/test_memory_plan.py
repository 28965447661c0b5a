"""The memory plan: weights counted exactly from the config, peaks checked against a
measured run of the default model in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InputError
from interp.memory_plan import count_parameters, plan_memory
from interp.models import load_config
from tests.tiny import saved_tiny, tiny_llama

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_plan.py"


def test_weights_are_counted_from_the_config_alone() -> None:
    model = tiny_llama()
    n_parameters = sum(p.numel() for p in model.hf.parameters())
    assert count_parameters(model.hf.config) == n_parameters
    assert plan_memory(model.hf.config, 64).extra("weights") == 4 * n_parameters
    half = plan_memory(model.hf.config, 64, dtype=torch.bfloat16)
    assert half.extra("weights") == 2 * n_parameters


def test_kv_cache_and_logits_grow_linearly() -> None:
    config = tiny_llama().hf.config
    small, large = plan_memory(config, 256), plan_memory(config, 512)
    assert large.extra("full logits") == 2 * small.extra("full logits")
    kv_per_token = 2 * 3 * 2 * 16 * 4  # 2 (K, V) x layers x KV heads x d_head x float32
    growth = large.extra("forward") - small.extra("forward")
    assert growth >= 256 * kv_per_token
    with pytest.raises(InputError):
        plan_memory(config, 0)


def test_cli_prints_the_plan_of_a_folder(tmp_path) -> None:
    folder = saved_tiny(tmp_path / "model")
    result = CliRunner().invoke(app, ["models", "--plan", str(folder), "--tokens", "300"])
    assert result.exit_code == 0, result.output
    for run in ("weights", "forward", "sinks", "retrieval", "act"):
        assert f"\n{run} " in result.output
    assert "300 tokens" in result.output
    bad = CliRunner().invoke(app, ["models", "--plan", str(folder), "--tokens", "0"])
    assert bad.exit_code == 2 and "n_tokens >= 1" in bad.output


@pytest.mark.integration
def test_plan_matches_a_measured_peak() -> None:
    """Sinks at 1k tokens on the default model, measured in a fresh process (see the
    benchmark's docstring for how): the plan is within 25% of the peak."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--child", "sinks", "1024"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT "))
    measured = json.loads(line.removeprefix("RESULT "))["peak"]
    plan = plan_memory(load_config(), 1024)
    planned = plan.peak("sinks") - plan.extra("weights")
    assert 0.75 <= planned / measured <= 1.25
