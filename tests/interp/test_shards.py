"""Sweeps split across processes (`interp.shards`): each way of splitting equals one process.

The split and the shard logs are checked on a toy workload; the commands on a tiny saved
Llama: `--shard` jobs and `interp merge` in-process, torchrun's two gloo ranks in a
subprocess, a shard stopped as a kill would and rerun, and a submitit array of two jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InputError
from interp.models import load_model
from interp.runs import WorkLog, log_files
from interp.shards import (
    Shard,
    ShardStopped,
    rank_device,
    rank_max_memory,
    split,
    use_shard,
)
from interp.work import DistinctPrefixTokens, Item, Work
from probes import niah, retrieval
from tests.interp.test_act_search import _task_folder
from tests.stops import Stop, count_items, logged, stop_after
from tests.tiny import saved_tiny, write_needles

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = {"analyzer": "squares"}
TABLES = ("scores", "tests")


def test_split_balances_cost_and_depends_on_the_costs_alone() -> None:
    costs = [8.0, 1.0, 3.0, 4.0, 2.0, 6.0]

    def load(units: list[int]) -> float:
        return sum(costs[u] for u in units)

    owner = split(len(costs), 2, load)
    loads = [sum(c for c, o in zip(costs, owner, strict=True) if o == s) for s in (0, 1)]
    assert loads == [12.0, 12.0] and owner == split(len(costs), 2, load)
    assert split(6, 1, load) == [0] * 6 and sorted(set(split(6, 4, load))) == [0, 1, 2, 3]


def test_distinct_prefix_tokens_count_each_shared_prefix_once() -> None:
    rng = np.random.default_rng(0)
    stem = rng.integers(0, 5, 30)
    prompts = [
        np.concatenate([stem[: rng.integers(0, 30)], rng.integers(0, 3, 12)]) for _ in range(9)
    ]
    distinct = DistinctPrefixTokens(prompts)
    for chosen in ([0], [3, 1], [0, 2, 4, 6, 8], list(range(9))):
        by_hand = {tuple(prompts[i][:k]) for i in chosen for k in range(1, len(prompts[i]) + 1)}
        assert distinct(chosen) == len(by_hand)


def test_the_split_balances_distinct_prompt_tokens_and_follows_shared_prefixes() -> None:
    # Group y: 6 prompts of 40 tokens, nothing shared. Groups x1-x3: 6 prompts each of 39
    # shared tokens and a last one of their own. Batches of 4 then 2 of each (by `order`). By
    # distinct tokens (largest first, each batch where the shard's load ends least), y's
    # batches cost 160 and 80, an x group's first 43 and its second 41 alone, but 2 where
    # its first batch is: shards {y 4, x3} = 205 and {y 2, x1, x2} = 170. By padded
    # tokens every first batch weighs 160 and every second 80: {y, x2} = 285 and {x1, x3}.
    rng = np.random.default_rng(1)
    items = [Item(f"y{n}", n, 40, order=0, prompt=rng.integers(10, 99, 40)) for n in range(6)]
    items += [
        Item(f"{g}{n}", n, 40, order=int(g[1]), prompt=[int(g[1])] * 39 + [n])
        for g in ("x1", "x2", "x3")
        for n in range(6)
    ]
    keys = [i.key for i in items]
    distinct = DistinctPrefixTokens([i.prompt for i in items])
    shard = Shard(0, 2, "ranks")

    def shards(work: Work) -> list[set[str]]:
        return [
            {i.key for b, o in zip(work.plan, work.owners, strict=True) if o == s for i in b}
            for s in (0, 1)
        ]

    work = Work(items, batch_size=4, shard=shard)
    assert [{i.key[:-1] for i in b} for b in work.plan] == [
        {g} for g in ("y", "y", "x1", "x1", "x2", "x2", "x3", "x3")
    ]
    assert [distinct([keys.index(k) for k in s]) for s in shards(work)] == [205, 170]
    assert shards(work)[1] >= {f"x{g}{n}" for g in (1, 2) for n in range(6)}
    plain = Work(
        [Item(i.key, i.value, i.length, order=i.order) for i in items], batch_size=4, shard=shard
    )
    assert [distinct([keys.index(k) for k in s]) for s in shards(plain)] == [285, 90]


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="i/N"):
        Shard.parse(text)
    assert Shard.parse(" 1 / 3 ") == Shard(1, 3, "jobs")


def _squares(seen: list[int]):
    def process(values: list[int]) -> list[list[dict]]:
        seen.extend(values)
        return [[{"n": v, "square": v * v}] for v in values]

    return process


def _work(folder: Path, shard: Shard) -> Work[int]:
    items = [Item(f"n/{n}", n, length=n % 5) for n in range(12)]
    with use_shard(shard):
        return Work(items, WorkLog(folder, IDENTITY), batch_size=2)


def test_jobs_run_their_share_and_a_merge_computes_nothing(tmp_path) -> None:
    alone = Work([Item(f"n/{n}", n, length=n % 5) for n in range(12)], batch_size=2)
    expected = alone.run(_squares([]))
    merge = Shard(0, 2, "merge")
    with pytest.raises(InputError, match="12 items of shards 0/2, 1/2"):
        _work(tmp_path, merge).run(_squares([]))
    first: list[int] = []
    with pytest.raises(ShardStopped, match="shard 0/2"):
        _work(tmp_path, Shard(0, 2, "jobs")).run(_squares(first))
    with pytest.raises(InputError, match="items of shards 1/2:"):
        _work(tmp_path, merge).run(_squares([]))
    second: list[int] = []
    assert _work(tmp_path, Shard(1, 2, "jobs")).run(_squares(second)) == expected
    assert sorted(first + second) == list(range(12)) and not set(first) & set(second)
    assert [p.name for p in log_files(tmp_path)] == ["work.0-of-2.jsonl", "work.1-of-2.jsonl"]
    merged: list[int] = []
    assert _work(tmp_path, merge).run(_squares(merged)) == expected and merged == []
    assert Work(alone.items, WorkLog(tmp_path, IDENTITY)).run(_squares(merged)) == expected
    assert merged == []  # one process resumes from the shard logs too


def test_a_shard_log_of_another_configuration_is_refused(tmp_path) -> None:
    with pytest.raises(ShardStopped):
        _work(tmp_path, Shard(0, 2, "jobs")).run(_squares([]))
    with use_shard(Shard(1, 2, "jobs")), pytest.raises(InputError, match="another analyzer"):
        WorkLog(tmp_path, {"analyzer": "cubes"})


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    """A tiny saved model, three needles, and the tables of one process's `score retrieval`."""
    root = tmp_path_factory.mktemp("shards")
    saved_tiny(root / "model")
    write_needles(root / "needles.jsonl")
    args = [
        "score", "retrieval", "--model", str(root / "model"), "--needles",
        str(root / "needles.jsonl"), "--lengths", "200", "--depths", "2",
        "--max-new-tokens", "2", "--average", "all", "--batch-size", "2", "--no-static",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--out", str(root / "single")])
    assert result.exit_code == 0, result.output
    return {"root": root, "args": args, "tables": _tables(root / "single")}


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLES}


def _assert_same_tables(folder: Path, expected: dict[str, pd.DataFrame]) -> None:
    for name, table in _tables(folder).items():
        assert_frame_equal(table, expected[name], check_exact=True)


def test_shard_jobs_then_merge_equal_one_process(grid, tmp_path) -> None:
    out = ["--out", str(tmp_path)]
    first = CliRunner().invoke(app, [*grid["args"], *out, "--shard", "1/2"])
    assert first.exit_code == 0 and "shard 1/2 logged its share" in first.output
    assert not (tmp_path / "tests.parquet").exists()
    missing = CliRunner().invoke(app, ["merge", str(tmp_path)])
    assert missing.exit_code == 2 and "lacks shards 0/2" in missing.output
    second = CliRunner().invoke(app, [*grid["args"], *out, "--shard", "0/2"])
    assert second.exit_code == 0 and not (tmp_path / "tests.parquet").exists()
    merged = CliRunner().invoke(app, ["merge", str(tmp_path)])
    assert merged.exit_code == 0, merged.output
    _assert_same_tables(tmp_path, grid["tables"])
    assert logged(tmp_path) == len(grid["tables"]["tests"])  # each test logged once
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {"work.0-of-2.jsonl", "work.1-of-2.jsonl"} <= set(manifest["files"])


def test_a_shard_stopped_mid_run_resumes_to_the_uninterrupted_tables(
    grid, tmp_path, monkeypatch
) -> None:
    root = grid["root"]
    model = load_model(str(root / "model"))
    config = retrieval.RetrievalConfig(lengths=(200,), n_depths=2, max_new_tokens=2, average="all")
    inputs = niah.NiahInputs(needles=root / "needles.jsonl", batch_size=2)
    with use_shard(Shard(1, 2, "jobs")), pytest.raises(Stop):
        retrieval.run_niah(model, config, inputs, stop_after(1), folder=tmp_path)
    with (tmp_path / "work.1-of-2.jsonl").open("a") as log:
        log.write('{"key": "cut short by the kill')  # a write the kill cut in half
    before = logged(tmp_path)
    runs = count_items(monkeypatch, retrieval, "scored_rows")
    for shard in (Shard(1, 2, "jobs"), Shard(0, 2, "jobs")):
        with use_shard(shard), pytest.raises(ShardStopped) if shard.index else nullcontext():
            retrieval.run_niah(model, config, inputs, folder=tmp_path)
    assert sum(runs) == len(grid["tables"]["tests"]) - before  # nothing logged ran again
    with use_shard(Shard(0, 2, "merge")):
        retrieval.run_niah(model, config, inputs, folder=tmp_path).save(tmp_path)
    _assert_same_tables(tmp_path, grid["tables"])


def test_torchrun_ranks_write_the_tables_of_one_process(grid, tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "interp.cli", *grid["args"], "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_tables(tmp_path, grid["tables"])
    assert sorted(p.name for p in log_files(tmp_path)) == ["work.0-of-2.jsonl", "work.1-of-2.jsonl"]
    assert logged(tmp_path) == len(grid["tables"]["tests"])
    assert done.stdout.count("results in") == 1  # rank 0 alone reports
    assert not list(tmp_path.glob("shard.*"))  # no rank stopped as a separate shard does


def _inputs(root: Path) -> dict[str, str]:
    """A tiny model with the layers the ACT search needs (it leaves out the first two and the
    last), three needles and a multiple-choice task folder."""
    model = saved_tiny(root / "model", n_layers=5)
    task = _task_folder(root, "words")
    needles = write_needles(root / "needles.jsonl")
    return {"model": str(model), "needles": str(needles), "task": task}


def _workflows(inputs: dict[str, str], out: Path) -> dict[str, list[str]]:
    """argv of every resumable workflow (retrieval first: the ablation reads its scores)."""
    small = ["--model", inputs["model"], "--no-static"]
    grid = ["--needles", inputs["needles"], "--lengths", "120,200", "--depths", "2"]
    argv = {
        "retrieval": ["score", "retrieval", *small, *grid, "--max-new-tokens", "2",
                      "--batch-size", "2"],
        "ablate": ["ablate", "retrieval", *small, *grid, "--ks", "0,2", "--seeds", "1",
                   "--scores", str(out / "retrieval" / "scores.parquet"),
                   "--max-new-tokens", "2", "--n-boot", "50", "--batch-size", "2"],
        "act": ["effect", "act", *small, "--task", inputs["task"], "--metric", "log_prob",
                "--threshold", "0.04", "--n-boot", "50", "--search-batch-size", "2"],
        "anchors": ["score", "anchors", *small, "--problems", "3", "--max-new-tokens", "16",
                    "--no-chat", "--h-lo", "2", "--h-hi", "8", "--causal-seeds", "1",
                    "--continuation", "3", "--n-boot", "50", "--causal-checks", "perturb,block",
                    "--alternatives", "2", "--rollout", "3"],
        "atlas": ["atlas", *small, "--quick", "--methods", "sinks,retrieval,head_kinds,anchors"],
    }  # fmt: skip
    return {name: [*args, "--out", str(out / name)] for name, args in argv.items()}


def test_torchrun_ranks_equal_one_process_for_every_workflow(tmp_path) -> None:
    inputs = _inputs(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ranked = list(_workflows(inputs, tmp_path / "ranks").values())
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "tests.interp.rank_commands", json.dumps(ranked),
    ]  # fmt: skip
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name, argv in _workflows(inputs, tmp_path / "single").items():
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, result.output
        single = tmp_path / "single" / name
        tables = sorted(p.relative_to(single) for p in single.rglob("*.parquet"))
        assert tables, name
        for table in tables:
            got = pd.read_parquet(tmp_path / "ranks" / name / table)
            expected = pd.read_parquet(single / table)
            assert_frame_equal(got, expected, check_exact=True, obj=f"{name}/{table}")
    shares = [p.parent.name for p in (tmp_path / "ranks").rglob("work.1-of-2.jsonl")]
    assert {"ablate", "act", "anchors", "retrieval"} <= set(shares)  # rank 1 took a share


def test_a_submitit_array_of_two_shards_then_a_merge_equals_one_process(
    tmp_path, monkeypatch
) -> None:
    submitit = pytest.importorskip("submitit")
    from tests.interp import shard_jobs

    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=5)
    out = str(tmp_path / "run")
    jobs = executor.map_array(shard_jobs.share, [out, out], [0, 1], [2, 2])
    outcomes = sorted(job.result() for job in jobs)
    assert outcomes in (["stopped", "stopped"], ["all", "stopped"])  # the later may see all
    assert len(log_files(out)) == 2 and logged(Path(out)) == 12
    expected = Work(shard_jobs.items(), batch_size=2).run(shard_jobs.squares)
    with use_shard(Shard(0, 2, "merge")):
        work = Work(shard_jobs.items(), WorkLog(out, shard_jobs.IDENTITY), batch_size=2)
        assert work.run(shard_jobs.squares) == expected


@pytest.fixture
def four_gpus_two_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of 2 on a node of 4 GPUs (of 1000 + i free bytes each), as torchrun sets it."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda gpu: (1000 + gpu, 5000))


def test_each_rank_gets_its_own_gpu(four_gpus_two_ranks: None) -> None:
    assert rank_device("cuda") == "cuda:1"
    assert rank_device("cpu") == "cpu"


def test_a_device_map_rank_gets_its_own_group_of_gpus(four_gpus_two_ranks: None) -> None:
    given = {"cpu": "4GiB", 2: "10GiB", 0: "10GiB"}
    assert rank_max_memory("auto", given) == {2: "10GiB", 3: 1003, "cpu": "4GiB"}
    shared_ram = rank_max_memory("balanced", None)
    assert shared_ram is not None and set(shared_ram) == {2, 3, "cpu"}
    assert shared_ram[2] == 1002 and 0 < shared_ram["cpu"] < psutil.virtual_memory().total // 2
    assert rank_max_memory(None, given) is given  # no device map: one device per rank
    assert rank_max_memory({"model": "cpu"}, None) is None  # a map without GPUs is kept
    with pytest.raises(InputError, match="same GPUs"):
        rank_max_memory({"model.embed_tokens": 0, "model.layers": "cpu"}, None)


def test_more_ranks_than_gpus_with_a_device_map_is_refused(
    four_gpus_two_ranks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "5")
    with pytest.raises(InputError, match="5 ranks on this node share 4 GPUs"):
        rank_max_memory("auto", None)


def test_one_process_keeps_its_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    given = {"cpu": "4GiB"}
    assert rank_max_memory("auto", given) is given and rank_device("cuda") == "cuda"
