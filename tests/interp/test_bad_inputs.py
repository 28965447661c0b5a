"""Malformed user files and specs: each public loader gives a one-line toolkit error.

The cases are generated from a few file contents crossed with every loader, so a loader that
lets any of them through (a traceback, or garbage accepted) fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from interp.errors import InterpError
from interp.models import load_model
from interp.placement import check_device
from interp.prompts import load_prompts
from interp.results import HeadScores
from interp.tasks import load_items, load_task
from probes.niah import load_haystack, load_needles

NEEDLE = {"needle": "The key is red.", "question": "What colour is the key?", "answer": "red"}
TASK_ITEM = {"prompt": "Is it?", "choices": ["yes", "no"], "answer": 0}

# name -> bytes; each is wrong for every text loader below.
BROKEN_TEXT = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "latin1": "caf\u00e9 cr\u00e8me".encode("latin-1"),
    "nul_only": b"\x00\x00\x00",
    "blank": b"\n\n   \n",
}
LOADERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "prompts_txt": (".txt", load_prompts),
    "prompts_jsonl": (".jsonl", load_prompts),
    "needles": (".jsonl", load_needles),
    "haystack": (".txt", lambda p: load_haystack([p])),
    "task_items": (".jsonl", load_items),
}


def _one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(InterpError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("content", sorted(BROKEN_TEXT))
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_broken_files_get_one_line_errors(tmp_path, loader, content):
    suffix, load = LOADERS[loader]
    path = tmp_path / f"input{suffix}"
    path.write_bytes(BROKEN_TEXT[content])
    _one_line_error(lambda: load(path))


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_missing_files_and_folders_are_named(tmp_path, loader):
    _suffix, load = LOADERS[loader]
    assert "does not exist" in _one_line_error(lambda: load(tmp_path / "nothing.jsonl"))
    assert "folder" in _one_line_error(lambda: load(tmp_path))


@pytest.mark.parametrize(
    "record",
    [
        {"text": 3},
        {"text": None},
        {"text": ["a"]},
        {"prompt": "no text field"},
        7,
    ],
)
def test_prompt_records_without_string_text_are_refused(tmp_path, record):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps(record) + "\n")
    assert "p.jsonl:2" in _one_line_error(lambda: load_prompts(path))


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_prompt_files_of_other_kinds_are_refused(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    path.write_text(json.dumps({"text": "hello"}))
    assert ".jsonl" in _one_line_error(lambda: load_prompts(path))


def test_upper_case_suffix_and_byte_order_mark_are_accepted(tmp_path):
    path = tmp_path / "P.JSONL"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "hello"}).encode() + b"\n")
    assert load_prompts(path) == ["hello"]


@pytest.mark.parametrize(
    "field_value",
    [("needle", 3), ("question", None), ("answer", ["red"]), ("answer", "blue")],
)
def test_needles_with_wrong_fields_are_refused(tmp_path, field_value):
    field, value = field_value
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({**NEEDLE, field: value}) + "\n")
    assert "n.jsonl:1" in _one_line_error(lambda: load_needles(path))


@pytest.mark.parametrize(
    "meta",
    ["{not json", "[]", '{"shots": -3}', '{"shots": 1.5}', '{"shots": true}', '{"instruction": 4}'],
)
def test_malformed_task_descriptions_are_refused(tmp_path, meta):
    (tmp_path / "task.json").write_text(meta)
    items = "".join(json.dumps(TASK_ITEM) + "\n" for _ in range(4))
    (tmp_path / "calibration.jsonl").write_text(items)
    (tmp_path / "test.jsonl").write_text(items)
    assert "task.json" in _one_line_error(lambda: load_task(tmp_path))


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04 a zip", b"GGUF" + b"\x00" * 20])
def test_bad_gguf_files_are_refused(tmp_path, monkeypatch, content):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    assert "GGUF" in _one_line_error(lambda: load_model(path))
    assert not list((tmp_path / "cache").rglob("*.tmp*"))  # nothing half-written is left


def test_checkpoint_folder_without_tokenizer_says_so(tmp_path, tiny):
    tiny.hf.save_pretrained(tmp_path)
    assert "no tokenizer" in _one_line_error(lambda: load_model(tmp_path))


@pytest.mark.parametrize("device", ["cuda:7", "gpu", "mps", "cuda"])
def test_unavailable_devices_are_refused_before_loading(device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    _one_line_error(lambda: check_device(device))
    _one_line_error(lambda: load_model(None, device=device))


@pytest.mark.parametrize("content", [None, b"", b"not parquet at all", b"PAR1"])
def test_result_files_that_are_not_results_are_refused(tmp_path, content):
    path = tmp_path / "scores.parquet"
    if content is not None:
        path.write_bytes(content)
    _one_line_error(lambda: HeadScores.load(path))


def _with_provenance(path: Path, raw: bytes) -> Path:
    """A real HeadScores file whose stored provenance is replaced by `raw`."""
    import numpy as np
    import pyarrow.parquet as pq

    from tests.interp.test_results import provenance

    HeadScores.from_matrix(np.zeros((2, 3)), provenance()).save(path)
    table = pq.read_table(path)
    meta = {**table.schema.metadata, b"interp.provenance": raw}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


GOOD_PROVENANCE = {
    "model": "m",
    "weights_hash": "w",
    "analyzer": "a",
    "config": {},
    "inputs_hash": "h",
    "n_inputs": 1,
}
BAD_PROVENANCE = [
    b"{not json",
    b"\xff\xfe not utf-8",
    b"[]",
    b"null",
    b'{"model": "m"}',
    json.dumps({**GOOD_PROVENANCE, "model": 3}).encode(),
    json.dumps({**GOOD_PROVENANCE, "config": []}).encode(),
    json.dumps({**GOOD_PROVENANCE, "n_inputs": "1"}).encode(),
    json.dumps({**GOOD_PROVENANCE, "n_inputs": -1}).encode(),
    json.dumps({**GOOD_PROVENANCE, "extra": 1}).encode(),
]


@pytest.mark.parametrize("raw", BAD_PROVENANCE)
def test_results_with_corrupt_provenance_are_refused(tmp_path, raw):
    path = _with_provenance(tmp_path / "scores.parquet", raw)
    assert "scores.parquet" in _one_line_error(lambda: HeadScores.load(path))


def test_head_scores_with_non_integer_heads_are_refused(tmp_path):
    import numpy as np

    from tests.interp.test_results import provenance

    scores = HeadScores.from_matrix(np.zeros((2, 3)), provenance())
    data = scores.data.assign(layer=scores.data.layer.astype(float) + 0.5)
    _one_line_error(lambda: HeadScores(data, scores.provenance))


@pytest.mark.parametrize("keep", [10, 1000, 100_000, 5_000_000])
def test_truncated_gguf_files_are_refused_before_reading_a_config(tmp_path, monkeypatch, keep):
    from interp.gguf import default_gguf_path
    from interp.models import load_config

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cut.gguf"
    with default_gguf_path().open("rb") as whole:
        path.write_bytes(whole.read(keep))
    assert "truncated" in _one_line_error(lambda: load_config(path))
    assert "truncated" in _one_line_error(lambda: load_model(path))
    assert not (tmp_path / "cache").exists()  # refused before hashing or converting


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "garbage"}, "Unknown device"),
        ({"n_tokens": 10**30}, "context is 512 tokens"),
        ({"n_tokens": 513}, "context is 512 tokens"),
        ({"batch": 10**18}, "batch in 1.."),
    ],
)
def test_memory_plans_take_sizes_the_model_can_run(options, message):
    from interp.memory_plan import plan_memory
    from tests.tiny import tiny_llama

    config = tiny_llama().hf.config
    arguments = {"n_tokens": 64, **options}
    assert message in _one_line_error(lambda: plan_memory(config, **arguments))


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (9000, 9000), (8192, 8193)])
def test_images_over_the_pixel_limit_are_refused_unread(tmp_path, width, height):
    from interp.inputs import load_image
    from tests.tiny import bomb_png, tiny_llava

    path = bomb_png(tmp_path / "bomb.png", width, height)
    assert "8192x8192" in _one_line_error(lambda: load_image(path))
    assert "8192x8192" in _one_line_error(lambda: tiny_llava().prepare("hi", path))


@pytest.mark.parametrize(
    "array",
    [
        np.full((20, 30, 3), np.nan),
        np.full((20, 30, 3), np.inf),
        np.where(np.eye(20, 30)[..., None] > 0, np.nan, 0.5) * np.ones(3),
        np.zeros((20, 30, 2)),
        np.zeros((20, 30, 5), np.uint8),
        np.zeros((0, 30, 3), np.uint8),
        np.zeros((20, 30, 3), dtype=object),
        np.zeros((20, 30, 3), dtype=np.complex64),
    ],
    ids=["nan", "inf", "some-nan", "2-channels", "5-channels", "empty", "object", "complex"],
)
def test_image_arrays_that_are_no_picture_are_refused(array):
    from tests.tiny import tiny_llava

    _one_line_error(lambda: tiny_llava().prepare("hi", array))


def test_a_bare_head_label_is_a_set_of_that_one_head():
    from interp.heads import Head, HeadSet

    assert HeadSet("L1H1") == HeadSet([Head(1, 1)]) and len(HeadSet("L1H1")) == 1
    assert HeadSet("L1H1, L2H0") == HeadSet("L1H1 L2H0") == HeadSet([(1, 1), (2, 0)])


@pytest.mark.parametrize(
    "heads",
    ["", " ", "L1H1,", "L1H1,,L2H2", "L1H1;L2H2", b"L1H1", 12, None, 1.5, (-1, 2), [(0, -3)]],
)
def test_head_sets_refuse_what_names_no_heads(heads):
    from interp.heads import HeadSet

    _one_line_error(lambda: HeadSet(heads))


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> object:
    """The word-level tiny Llama the circuit tasks run on (shipped fillers are one token)."""
    from tests.circuits.word_model import saved_words_tiny

    return load_model(saved_words_tiny(tmp_path_factory.mktemp("words")))


@pytest.mark.parametrize("builder", ["ioi", "colored_objects", "name_recall"])
@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_circuit_task_builders_refuse_bad_seeds(words, builder, seed):
    import circuits.tasks

    build = getattr(circuits.tasks, builder)
    assert "seed" in _one_line_error(lambda: build(words, 4, seed=seed))


@pytest.mark.parametrize("builder", ["ioi", "colored_objects", "name_recall"])
def test_circuit_task_builders_refuse_counts_no_run_can_use_at_once(words, builder):
    import circuits.tasks

    build = getattr(circuits.tasks, builder)
    assert "at most 100000" in _one_line_error(lambda: build(words, 10**9))


def test_task_subsamples_refuse_a_negative_seed(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps(TASK_ITEM) + "\n" + json.dumps(TASK_ITEM) + "\n")
    task = load_task(tmp_path / "t.jsonl", "test")
    assert "seed" in _one_line_error(lambda: task.subsample(1, -1))


@pytest.mark.parametrize("n", [0, -5, 100_001, 10**30, 1.5, True])
def test_shapes_evaluation_takes_only_held_out_scenes(n):
    from probes.organisms.shapes.scenes import held_out_seeds

    assert "held-out scenes" in _one_line_error(lambda: held_out_seeds(n))


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--scenes", "0"], "held-out scenes"), (["--threads", "0"], "--threads")],
)
def test_shapes_evaluation_script_refuses_in_one_line(monkeypatch, argv, message):
    from probes.organisms.shapes import evaluate

    monkeypatch.setattr("sys.argv", ["evaluate", *argv])
    with pytest.raises(SystemExit) as stopped:
        evaluate.main()
    assert str(stopped.value).startswith("error:") and message in str(stopped.value)


@pytest.mark.parametrize("content", [b"", b"not safetensors", b"\xff" * 64])
def test_shapes_llava_refuses_weights_that_are_not_safetensors(tmp_path, content):
    from probes.organisms.shapes.model import load_shapes_llava

    path = tmp_path / "tower.safetensors"
    path.write_bytes(content)
    assert "shapes-llava weights" in _one_line_error(lambda: load_shapes_llava(path))


def test_sinks_refuse_min_queries_no_key_of_the_prompts_can_reach():
    from probes.sinks import SinkConfig, run
    from tests.tiny import tiny_llama

    model = tiny_llama()
    assert "longest prompt" in _one_line_error(
        lambda: run(model, ["a short prompt"], SinkConfig(min_queries=500))
    )
