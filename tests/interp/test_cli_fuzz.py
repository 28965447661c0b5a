"""Malformed invocations of every command: each is one `error:` line and exit code 2.

The cases are generated: every option of every command gets the bad values of its kind
(non-finite, out-of-range or non-numeric numbers, unknown choices, files that are missing,
folders, empty, binary, not UTF-8 or of the wrong kind, bad model specs and output folders).
A case fails if the command prints a traceback, prints more or less than one error line,
exits otherwise than with 2, or accepts the garbage and runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from interp.cli import app
from interp.results import HeadScores
from tests.circuits.word_model import saved_words_tiny
from tests.interp.fuzz_inputs import (
    EXTRA_BAD_VALUES,
    early_cases,
    extra_commands,
    write_hostile_files,
)
from tests.interp.test_results import provenance
from tests.tiny import saved_tiny, tiny_llava, write_image_task

BAD_VALUES = {
    "probability": ["nan", "inf", "-0.5", "1.5", "abc"],
    "positive": ["nan", "inf", "-1", "0", "abc"],
    "finite": ["nan", "inf", "-inf", "abc"],
    "count": ["0", "-3", "abc", "1.5"],
    "non_negative": ["-1", "abc", "1.5"],
    "lengths": ["abc", "-5", "1,,x", ",", "0"],
    "ks": ["abc", "-1", "2,x"],
    "dims": ["abc", "-1", "2,x", "99999"],
    "choice": ["bogus", ""],
    "device": ["cuda:7", "gpu"],
    "heads": ["bogus", "L99H0", "L1H9", ""],
    "dtype": ["float8", "bogus"],
    "device_map": ["bogus", "{not json", "[1, 2]"],
    "max_memory": ["abc", "cpu=", "=8GiB"],
    "non_negative_int": ["-1", "abc", "1.5", "99"],
    "non_negative_float": ["-1", "nan", "inf", "abc"],
    "position": ["abc", "1.5", "99", "-99"],
    **EXTRA_BAD_VALUES,
}
PLACEMENT = {"--dtype": "dtype", "--device-map": "device_map", "--max-memory": "max_memory"}
FILE_KINDS = ["missing", "folder", "empty", "binary", "latin1"]
SMALL_GRID = ["--lengths", "250", "--depths", "1", "--max-new-tokens", "2", "--no-static"]
SMALL_ABLATION = ["--ks", "0,1", "--seeds", "1", "--n-boot", "20"]
SMALL_SEARCH = ["--max-heads", "1", "--n-boot", "20", "--no-static"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny model folder, valid inputs for every command, and broken files of each kind."""
    root = tmp_path_factory.mktemp("fuzz")
    saved_tiny(root / "model")
    (root / "prompts.txt").write_text("The cat sat on the mat.\n\nA second prompt.")
    needle = {"needle": "The key is red.", "question": "What colour is the key?", "answer": "red"}
    (root / "needles.jsonl").write_text(json.dumps(needle) + "\n")
    task = root / "task"
    task.mkdir()
    (task / "task.json").write_text('{"instruction": "Answer.", "shots": 1}')
    item = {"prompt": "Is the sky blue?", "choices": ["yes", "no"], "answer": 0}
    (task / "calibration.jsonl").write_text((json.dumps(item) + "\n") * 4)
    (task / "test.jsonl").write_text((json.dumps(item) + "\n") * 4)
    matrix = np.zeros((3, 4))
    HeadScores.from_matrix(matrix, provenance(analyzer="retrieval")).save(root / "scores.parquet")
    HeadScores.from_matrix(matrix, provenance(analyzer="sinks")).save(root / "sinks.parquet")
    broken = {
        "empty": b"",
        "binary": bytes(range(256)) * 8,
        "latin1": "caf\u00e9 cr\u00e8me\n".encode("latin-1"),
    }
    for kind, content in broken.items():
        for suffix in (".txt", ".jsonl", ".parquet"):
            (root / f"{kind}{suffix}").write_bytes(content)
    (root / "folder").mkdir()
    (root / "a_file").write_text("not a folder")
    (root / "not.gguf").write_text("not a gguf file")
    saved_words_tiny(root / "words")  # circuit tasks need single-token fillers
    llava = tiny_llava(n_layers=4)  # VAR edits layers 2..L-2
    llava.hf.save_pretrained(root / "llava")
    llava.processor.save_pretrained(root / "llava")
    (root / "images").mkdir()
    Image.new("RGB", (20, 30), (200, 10, 10)).save(root / "images" / "a.png")
    image_task = write_image_task(root / "image_task", n_items=2)
    hostile = write_hostile_files(root)
    return {
        "root": root,
        "model": root / "model",
        "task": task,
        "image_task": image_task,
        **hostile,
    }


def bad_path(root: Path, kind: str, suffix: str) -> str:
    return str(root / {"missing": f"missing{suffix}", "folder": "folder"}.get(kind, kind + suffix))


# command -> (valid arguments, {option: kind of value, or ("file", suffix)})
def commands(f: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, object]]]:
    root, model = f["root"], str(f["model"])
    common = {"--model": "model", "--out": "out", "--device": "device"}
    niah = {"--needles": ("file", ".jsonl"), "--haystack": ("file", ".txt")}
    return {
        "score sinks": (
            ["--model", model, "--prompts", str(root / "prompts.txt"), "--no-static"],
            {
                **common,
                **PLACEMENT,
                "--prompts": ("file", ".txt"),
                "--threshold": "probability",
                "--threshold-mode": "choice",
                "--min-queries": "min_queries",
                "--massive-threshold": "positive",
            },
        ),
        "score retrieval": (
            ["--model", model, "--needles", str(root / "needles.jsonl"), *SMALL_GRID],
            {
                **common,
                **niah,
                **PLACEMENT,
                "--lengths": "lengths",
                "--depths": "count",
                "--max-new-tokens": "count",
                "--count": "choice",
                "--span": "choice",
                "--average": "choice",
                "--threshold": "probability",
                "--batch-size": "count",
            },
        ),
        "ablate retrieval": (
            [
                *("--model", model, "--scores", str(root / "scores.parquet")),
                *("--needles", str(root / "needles.jsonl"), *SMALL_GRID, *SMALL_ABLATION),
            ],
            {
                **common,
                **niah,
                "--scores": ("file", ".parquet"),
                "--lengths": "lengths",
                "--depths": "count",
                "--ks": "ks",
                "--seeds": "non_negative",
                "--masking": "choice",
                "--positions": "choice",
                "--random-draw": "choice",
                "--metric": "choice",
                "--threshold": "probability",
                "--max-new-tokens": "count",
                "--n-boot": "count",
                "--interval": "choice",
                "--seed": "non_negative",
                "--batch-size": "count",
            },
        ),
        "effect act": (
            ["--model", model, "--task", str(f["task"]), *SMALL_SEARCH],
            {
                **common,
                "--task": ("file", ".jsonl"),
                "--heads": ("file", ".parquet"),
                "--calibration-items": "non_negative",
                "--test-items": "non_negative",
                "--max-heads": "non_negative",
                "--metric": "choice",
                "--min-gain": "finite",
                "--beta": "probability",
                "--threshold": "probability",
                "--n-boot": "count",
                "--seed": "non_negative",
            },
        ),
        "score vision": (
            ["--model", str(root / "llava"), "--images", str(root / "images"), "--no-static"],
            {
                **common,
                **PLACEMENT,
                "--images": ("file", ".png"),
                "--prompts": ("file", ".txt"),
                "--tau": "positive",
                "--sink-dims": "dims",
                "--batch-size": "count",
            },
        ),
        **circuit_commands(f),
        **vision_effect_commands(f),
        **sae_commands(f),
        **extra_commands(f),
    }


def vision_effect_commands(f: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, object]]]:
    """`interp effect vhr|var` (issue 12), on the saved tiny LLaVA and a tiny image task."""
    root = f["root"]
    valid = ["--model", str(root / "llava"), "--task", str(f["image_task"]), "--n-boot", "20"]
    shared = {
        "--model": "model",
        "--out": "out",
        "--device": "device",
        **PLACEMENT,
        "--task": ("file", ".jsonl"),
        "--captions": ("file", ".jsonl"),
        "--items": "non_negative",
        "--metric": "choice",
        "--batch-size": "count",
        "--n-boot": "count",
        "--seed": "non_negative",
    }
    return {
        "shapes tasks": (
            ["--scenes", "1"],
            {"--scenes": "count", "--out": "out", "--split": "choice"},
        ),
        "effect vhr": (
            [*valid, "--no-static"],
            {**shared, "--alpha": "finite", "--last-layers": "non_negative"},
        ),
        "effect var": (
            [*valid, "--no-static", "--tau", "2.5"],
            {
                **shared,
                "--p": "probability",
                "--rho": "probability",
                "--convention": "choice",
                "--tau": "positive",
                "--sink-dims": "dims",
                "--min-image-share": "probability",
            },
        ),
    }


def circuit_commands(f: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, object]]]:
    """`interp circuit ...` (issue 9), on the word-level tiny model."""
    common = {"--model": "model", "--out": "out", "--device": "device"}
    words = ["--model", str(f["root"] / "words"), "--n", "4", "--no-static"]
    discovery = {
        "--n": "count",
        "--seed": "non_negative",
        "--per-stage": "non_negative",
        "--max-heads": "count",
        "--rank-by": "choice",
        "--patching": "choice",
        "--batch-size": "count",
    }
    return {
        # colored-objects shares these options' code with ioi
        "circuit ioi": (
            words,
            {
                **common,
                **discovery,
                "--corruption": "choice",
                "--check-templates": ("file", ".jsonl"),
            },
        ),
        "circuit overlap": (
            [*words, "--repair-n", "4", "--repair", "L1H0", "--n-boot", "20"],
            {
                **common,
                "--n": "count",
                "--repair-n": "count",
                "--seed": "non_negative",
                "--top-fraction": "probability",
                "--rank-by": "choice",
                "--repair": "heads",
                "--random-controls": "non_negative",
                "--n-boot": "count",
                "--batch-size": "count",
            },
        ),
    }


def sae_commands(f: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, object]]]:
    """`interp sae ...` and `interp circuit sae` (issue 10), on the tiny models."""
    common = {"--model": "model", "--out": "out", "--device": "device"}
    root, model = f["root"], str(f["model"])
    train = ["--model", model, "--layer", "1", "--texts", str(root / "prompts.txt")]
    small = ["--d-sae", "8", "--epochs", "1", "--holdout-every", "2"]
    return {
        "sae train": (
            [*train, *small],
            {
                **common,
                "--layer": "non_negative_int",
                "--hook": "choice",
                "--texts": ("file", ".txt"),
                "--holdout-every": "count",
                "--d-sae": "d_sae",
                "--l1-coefficient": "non_negative_float",
                "--lr": "positive",
                "--epochs": "count",
                "--batch-size": "count",
                "--normalize": "choice",
                "--seed": "non_negative",
            },
        ),
        "circuit sae": (
            ["--model", str(root / "words"), "--n", "4", "--epochs", "2", "--no-static"],
            {
                **common,
                "--task": "choice",
                "--n": "count",
                "--seed": "non_negative",
                "--seeds": "count",
                "--reference": ("file", ".parquet"),
                "--d-sae": "count",
                "--sparsity": "non_negative_float",
                "--lr": "positive",
                "--epochs": "count",
                "--n-train": "count",
                "--batch-size": "count",
            },
        ),
        "sae latents": (
            [
                *("--model", model, "--sae", str(_tiny_sae(f)), "--prompt", "The cat"),
                *("--latent", "0", "--no-static"),
            ],
            {
                **common,
                "--sae": ("file", ".txt"),
                "--top-k": "count",
                "--latent": "non_negative_int",
                "--position": "position",
            },
        ),
    }


def _tiny_sae(f: dict[str, Path]) -> Path:
    """An SAE on the tiny model's blocks.1.hook_resid_post, trained once per fixture."""
    folder = f["root"] / "sae"
    if not folder.exists():
        from interp.activations import collect_tokens
        from interp.models import load_model
        from interp.saes import SAETrainConfig, train_sae

        acts = collect_tokens(
            load_model(str(f["model"])), ["a b c", "d e"], "blocks.1.hook_resid_post"
        )
        train_sae(acts, SAETrainConfig(d_sae=8)).save(folder)
    return folder


def cases(f: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(label, argv) for every malformed invocation."""
    root, out = [], f["root"]
    for command, (valid, options) in commands(f).items():
        for option, kind in options.items():
            if kind == "model":
                values = [str(out / "missing.gguf"), str(out / "not.gguf"), str(out / "folder")]
                values += [str(out / "prompts.txt"), str(f["cut_gguf"])]
            elif kind == "out":
                values = [str(out / "a_file"), str(out / ("x" * 300))]
            elif isinstance(kind, tuple):
                values = [bad_path(out, k, kind[1]) for k in FILE_KINDS]
            else:
                values = BAD_VALUES[str(kind)]
            for value in values:
                root.append(
                    (
                        f"{command} {option}={value[-24:]!r}",
                        [*command.split(), *valid, option, value],
                    )
                )
    root.append(
        (
            "ablate sinks-as-scores",
            [
                "ablate",
                "retrieval",
                *commands(f)["ablate retrieval"][0],
                "--scores",
                str(out / "sinks.parquet"),
            ],
        )
    )
    root.append(
        (
            "effect retrieval-as-heads",
            [
                "effect",
                "act",
                *commands(f)["effect act"][0],
                "--heads",
                str(out / "scores.parquet"),
            ],
        )
    )
    root.append(
        (
            "effect unknown task",
            ["effect", "act", *commands(f)["effect act"][0], "--task", "no_such_task"],
        )
    )
    return root + early(f)


def early(f: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """The cases that must be refused before the model loads (see fuzz_inputs)."""
    return early_cases(f, {command: spec[0] for command, spec in commands(f).items()})


def test_there_are_enough_cases(files) -> None:
    """The README quotes 652 cases (19 refused before loading): the suite may grow, not shrink."""
    assert len(cases(files)) >= 652 and len(early(files)) >= 19


def test_every_malformed_invocation_is_one_line_and_exit_2(files, tmp_path) -> None:
    runner = CliRunner()
    failures = []
    before_loading = {label for label, _ in early(files)}
    for index, (label, argv) in enumerate(cases(files)):
        if "--out" not in argv and argv[0] != "models":  # `models` writes no folder
            argv = [*argv, "--out", str(tmp_path / f"run{index}")]
        result = runner.invoke(app, argv)
        output = result.output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        late = label in before_loading and "loading " in output
        if result.exit_code != 2 or len(errors) != 1 or "Traceback" in output or late:
            failures.append(f"{label}: exit {result.exit_code}, {output.strip()[-160:]!r}")
    assert not failures, f"{len(failures)} of {len(cases(files))}:\n" + "\n".join(failures)
