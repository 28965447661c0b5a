"""`interp score vision` on a saved tiny random LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from interp.cli import app
from tests.tiny import saved_tiny, tiny_llava, tiny_llava_next

runner = CliRunner()


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    model = tiny_llava()
    saved = tmp_path / "model"
    model.hf.save_pretrained(saved)
    model.processor.save_pretrained(saved)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (20, 30)), ("b.jpg", (40, 24))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    return saved, images


def test_score_vision_writes_tables_figures_and_a_manifest(tmp_path: Path):
    saved, images = _folders(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is shown?\n\nWhat colour is it?")
    out = tmp_path / "run"
    args = ["score", "vision", "--model", str(saved), "--images", str(images)]
    result = runner.invoke(
        app, [*args, "--prompts", str(prompts), "--out", str(out), "--tau", "2.5", "--no-static"]
    )
    assert result.exit_code == 0, result.output
    vhd = pd.read_csv(out / "vhd.csv")
    assert len(vhd) == 2 * 3 * 4 and set(vhd.example) == {0, 1}
    assert len(pd.read_csv(out / "vhd_per_head.csv")) == 12
    attention = pd.read_csv(out / "image_attention.csv")
    assert attention.score.between(0, 1).all()
    sinks = pd.read_csv(out / "visual_sinks.csv")
    assert sinks.visual_sink.any()
    assert (out / "figures" / "vhd.html").is_file()
    assert (out / "figures" / "image_attention.html").is_file()
    patches = pd.read_csv(out / "sink_patches.csv")
    assert len(patches) == 2 * 16 and set(patches.view) == {0}  # 16 patches an image
    marked = patches[patches.n_layers > 0].merge(
        sinks[sinks.visual_sink].groupby(["example", "position"]).size().rename("n").reset_index()
    )
    assert len(marked) and (marked.n == marked.n_layers).all()
    assert (out / "figures" / "sink_patches_0_0.html").is_file()
    assert (out / "figures" / "sink_patches_1_0.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 2
    assert manifest["provenance"]["analyzer"] == "vision_head_divergence"


def test_score_vision_errors_are_one_line(tmp_path: Path):
    saved, images = _folders(tmp_path)
    prompts = tmp_path / "three.txt"
    prompts.write_text("a\n\nb\n\nc")
    base = ["score", "vision", "--model", str(saved)]
    cases = {
        "No image files": [*base, "--images", str(tmp_path / "model")],
        "3 prompts for 2 images": [*base, "--images", str(images), "--prompts", str(prompts)],
        "comma-separated int": [*base, "--images", str(images), "--sink-dims", "x"],
    }
    for message, argv in cases.items():
        result = runner.invoke(app, argv)
        assert result.exit_code != 0
        assert message in result.output, result.output


def test_score_vision_refuses_a_text_only_model_before_loading_it(tmp_path: Path):
    _, images = _folders(tmp_path)
    text_model = saved_tiny(tmp_path / "llama")
    for model in ([], ["--model", str(text_model)]):  # the default is text-only
        result = runner.invoke(app, ["score", "vision", *model, "--images", str(images)])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert "text-only model" in errors[0] and "shapes-llava" in errors[0]
        assert "loading" not in result.output  # load_model_or_fail's status line


def test_score_vision_maps_sink_patches_on_llava_next(tmp_path: Path):
    # LLaVA-NeXT's tiled image tokens have a token-to-patch map (interp.image_tiles): the
    # command no longer notes it as unsupported (the refusals are tested in
    # test_image_patches).
    model = tiny_llava_next()
    saved = tmp_path / "next"
    model.hf.save_pretrained(saved)
    model.processor.save_pretrained(saved)
    _, images = _folders(tmp_path)
    out = tmp_path / "run"
    args = ["score", "vision", "--model", str(saved), "--images", str(images), "--out", str(out)]
    result = runner.invoke(app, [*args, "--no-static"])
    assert result.exit_code == 0, result.output
    assert "no sink-patch figure" not in result.output
    assert (out / "vhd.csv").is_file()


def test_score_images_is_what_score_vision_writes(tmp_path: Path):
    from interp.models import load_model
    from probes import vision_scores
    from tests.written import assert_tables_written

    saved, images = _folders(tmp_path)
    out = tmp_path / "run"
    args = ["score", "vision", "--model", str(saved), "--images", str(images), "--tau", "2.5"]
    result = runner.invoke(app, [*args, "--out", str(out), "--no-static"])
    assert result.exit_code == 0, result.output
    files, texts = vision_scores.load_inputs(images)
    config = vision_scores.VisionScoresConfig(tau=2.5)
    scores = vision_scores.score_images(load_model(str(saved)), texts, files, config)
    assert set(scores.tables) == {path.stem for path in out.glob("*.parquet")}
    assert_tables_written(scores.tables, out, tmp_path / "py")
    assert set(scores.figures) == {path.stem for path in (out / "figures").glob("*.html")}
