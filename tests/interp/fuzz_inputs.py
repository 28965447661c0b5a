"""The fuzz suite's hostile inputs for file contents, images, numbers and sweeps (issue 27).

`test_cli_fuzz` crosses every command's options with bad values of their kind; this module
adds the kinds that are tied to a model or a file's contents (context lengths, memory,
prompt counts, sweep values, decompression-bomb images, truncated GGUF files, corrupt
provenance, template slots), the `models --plan` and `score anchors` commands, and
invocations that must be refused before the model loads (`early_cases`).
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.gguf import default_gguf_path
from tests.interp.test_bad_inputs import BAD_PROVENANCE, _with_provenance
from tests.tiny import bomb_png, write_image_task

HUGE = "1" + "0" * 30  # an integer typer parses, far beyond any model
EXTRA_BAD_VALUES = {
    "tokens": ["0", "-1", "abc", "513", HUGE],  # the tiny model's context is 512
    "plan_device": ["garbage", "", "cuda:x"],
    "min_queries": ["0", "-3", "abc", "1.5", "513", HUGE],
    "d_sae": ["0", "-3", "abc", "1.5", "1000000000000"],
    "anchor_budget": ["0", "-1", "abc", "1"],  # an anchor needs more than h_lo=1 (and 2 for ΔWAAD)
}


def write_hostile_files(root: Path) -> dict[str, Path]:
    """Files whose bytes are wrong in the ways a loader must catch, beside valid ones."""
    bombs = root / "bomb_images"
    bombs.mkdir()
    bomb_png(bombs / "a.png")
    bomb_task = write_image_task(root / "bomb_task", n_items=2)
    images = sorted(bomb_task.rglob("*.png"))
    assert images, "the image task's layout changed: no image to replace"
    for item in images:
        bomb_png(item)
    cut = root / "cut.gguf"
    with default_gguf_path().open("rb") as whole:
        cut.write_bytes(whole.read(5_000_000))  # header whole, tensors cut short
    corrupt = [
        _with_provenance(root / f"provenance{i}.parquet", raw)
        for i, raw in enumerate(BAD_PROVENANCE)
    ]
    slots = root / "bad_slots.jsonl"
    slots.write_text(json.dumps({"template": "When {IO} and {X} met, {S} smiled at"}) + "\n")
    short = root / "short_traces.jsonl"
    short.write_text(json.dumps({"prompt": "Q?", "response": "A."}) + "\n")
    return {
        "bombs": bombs,
        "bomb_task": bomb_task,
        "cut_gguf": cut,
        "bad_slots": slots,
        **{f"provenance{i}": path for i, path in enumerate(corrupt)},
    }


def extra_commands(f: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, object]]]:
    """`interp models --plan` and `interp score anchors`, on the tiny model."""
    model = str(f["model"])
    anchors = ["--model", model, "--problems", "1", "--max-new-tokens", "16", "--no-chat"]
    return {
        "models": (
            ["--plan", model, "--tokens", "64"],
            {
                "--plan": "model",
                "--tokens": "tokens",
                "--batch": "count",
                "--device": "plan_device",
                "--dtype": "dtype",
            },
        ),
        "score anchors": (
            [*anchors, "--no-causal", "--n-boot", "20", "--no-static"],
            {
                "--model": "model",
                "--out": "out",
                "--device": "device",
                "--traces": ("file", ".jsonl"),
                "--max-new-tokens": "anchor_budget",
                "--problems": "count",
            },
        ),
    }


def early_cases(f: dict[str, Path], valid: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(label, argv) of invocations that must be refused before the model loads.

    `valid` maps a command to its valid arguments in `test_cli_fuzz.commands`.
    """
    root = f["root"]
    words = ["--model", str(root / "words"), "--no-static"]
    provenance = sorted(k for k in f if k.startswith("provenance"))
    listed = [
        ("score vision bomb image", ["score", "vision", *valid["score vision"]]),
        ("effect vhr bomb task", ["effect", "vhr", *valid["effect vhr"]]),
        ("effect vhr repeated alpha", ["effect", "vhr", *valid["effect vhr"]]),
        ("effect var repeated p", ["effect", "var", *valid["effect var"]]),
        ("effect act seed -1", ["effect", "act", *valid["effect act"], "--seed", "-1"]),
        ("colored-objects n 1e9", ["circuit", "colored-objects", *words, "--n", "1000000000"]),
        ("ioi n 1e9", ["circuit", "ioi", *words, "--n", "1000000000"]),
        ("overlap repair-n 1e9", ["circuit", "overlap", *words, "--repair-n", "1000000000"]),
        (
            "ioi bad check-template slots",
            ["circuit", "ioi", *words, "--n", "4", "--check-templates", str(f["bad_slots"])],
        ),
        *(
            (
                f"circuit sae corrupt {name}",
                ["circuit", "sae", *valid["circuit sae"], "--reference", str(f[name])],
            )
            for name in provenance
        ),
    ]
    extra = {
        "score vision bomb image": ["--images", str(f["bombs"])],
        "effect vhr bomb task": ["--task", str(f["bomb_task"])],
        "effect vhr repeated alpha": ["--alpha", "2", "--alpha", "1.5", "--alpha", "2"],
        "effect var repeated p": ["--p", "0.4", "--p", "0.4"],
    }
    return [(label, [*argv, *extra.get(label, [])]) for label, argv in listed]
