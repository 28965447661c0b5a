"""Vision-language inputs (`Model.prepare`, `interp.inputs`) on tiny random LLaVA and Idefics3."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interp.errors import InputError, UnsupportedModelError
from interp.explicit_attention import AttentionRows
from interp.hooks import attention_hooks, head_output_hooks
from interp.inputs import ModelInputs, TokenKind, load_image
from interp.models import Model, load_model
from tests.tiny import tiny_idefics3, tiny_llama, tiny_llava, tiny_llava_next

BUILDERS = {"llava": tiny_llava, "llava_next": tiny_llava_next, "idefics3": tiny_idefics3}


def tokens_per_image(name: str, model: Model, height: int, width: int) -> int:
    """Image tokens of one image, from the model family's rule (not from the code under test).

    LLaVA: 16 patches (CLS dropped). Idefics3: 16 patches shuffled 2x2 into 4. LLaVA-NeXT:
    the processor's own count for the image size (tiles, base image and newlines).
    """
    if name == "llava_next":
        counts = model.processor._get_num_multimodal_tokens(image_sizes=[(height, width)])
        return counts["num_image_tokens"][0]
    return {"llava": 16, "idefics3": 4}[name]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request: pytest.FixtureRequest) -> tuple[str, Model]:
    return request.param, BUILDERS[request.param]()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _check_kinds(model: Model, inputs: ModelInputs) -> None:
    """Kinds agree with the ids and mask they must come from."""
    token_id = model.hf.config.image_token_id
    assert torch.equal(inputs.image_mask, inputs.input_ids == token_id)
    assert torch.equal(inputs.kinds == TokenKind.PADDING, inputs.attention_mask == 0)
    assert bool((inputs.attention_mask[:, -1] == 1).all())  # left padded


def test_images_of_several_sizes_give_the_processors_token_count(vlm):
    name, model = vlm
    sizes = [(20, 30), (64, 48), (7, 100), (32, 32)]
    texts = [f"picture {i}" for i in range(len(sizes))]
    inputs = model.prepare(texts, [_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)])
    _check_kinds(model, inputs)
    assert inputs.n_image_tokens == [tokens_per_image(name, model, h, w) for h, w in sizes]
    logits = model.hf(**inputs).logits
    assert logits.shape[:2] == inputs.input_ids.shape
    assert bool(torch.isfinite(logits).all())


def test_batch_of_two_has_a_span_per_row_and_matches_each_row_alone(vlm):
    name, model = vlm
    texts = ["a long caption before the image: <image> and after", "<image> short"]
    images = [_image(30, 40, seed=1), [_image(50, 20, seed=2)]]
    counts = [tokens_per_image(name, model, 30, 40), tokens_per_image(name, model, 50, 20)]
    inputs = model.prepare(texts, images)
    _check_kinds(model, inputs)
    spans = [inputs.image_span(0), inputs.image_span(1)]
    assert spans[0] != spans[1]
    for row, (start, stop) in enumerate(spans):
        assert stop - start == counts[row]
        assert bool((inputs.kinds[row, start:stop] == TokenKind.IMAGE).all())
        assert inputs.image_runs(row) == [(start, stop)]
    batched = model.hf(**inputs).logits[:, -1]
    for row in range(2):
        alone = model.prepare(texts[row], images[row])
        (start, stop) = alone.image_span(0)
        assert stop - start == counts[row]
        width = inputs.input_ids.shape[1]
        assert spans[row] == (
            start + width - alone.input_ids.shape[1],
            stop + width - alone.input_ids.shape[1],
        )
        torch.testing.assert_close(
            batched[row], model.hf(**alone).logits[0, -1], atol=1e-5, rtol=1e-5
        )


def test_rows_without_images_and_prompts_without_placeholders(vlm):
    name, model = vlm
    inputs = model.prepare(["a cat", "no image here"], [_image(20, 30), None])
    _check_kinds(model, inputs)
    assert inputs.n_image_tokens == [tokens_per_image(name, model, 20, 30), 0]
    assert inputs.image_span(1) is None
    # With no placeholder in the text, the image goes in front of it.
    _, stop = inputs.image_span(0)
    assert model.tokenizer.decode(inputs.input_ids[0, stop:]).endswith("a cat")
    assert model.hf(**inputs).logits.shape[0] == 2
    with pytest.raises(InputError, match="needs an image with every prompt; prompt 1"):
        inputs.require_images("Vision-aware head divergence")


def test_several_images_in_one_prompt_give_one_run_each(vlm):
    name, model = vlm
    sizes = [(20, 30), (40, 24)]
    inputs = model.prepare("two pictures", [_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)])
    _check_kinds(model, inputs)
    runs = inputs.image_runs(0)
    assert [stop - start for start, stop in runs] == [
        tokens_per_image(name, model, *s) for s in sizes
    ]
    assert model.hf(**inputs).logits.shape[:2] == inputs.input_ids.shape


def test_idefics3_split_images_give_one_run_per_tile():
    model = tiny_idefics3(split=True)
    inputs = model.prepare("tiles", _image(60, 64))
    _check_kinds(model, inputs)
    runs = inputs.image_runs(0)
    assert len(runs) > 1  # tiles plus the global image, separated by their tags
    assert all(stop - start == 4 for start, stop in runs)
    assert inputs.image_span(0) == (runs[0][0], runs[-1][1])
    assert model.hf(**inputs).logits.shape[:2] == inputs.input_ids.shape


def test_image_from_path_array_and_pil_agree(tmp_path: Path):
    array = _image(24, 36)
    path = tmp_path / "picture.png"
    Image.fromarray(array).save(path)
    as_pil = load_image(Image.fromarray(array))
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(as_pil))
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(as_pil))
    assert np.array_equal(np.asarray(load_image(array)), np.asarray(as_pil))
    floats = load_image(array.astype(np.float32) / 255)
    assert np.array_equal(np.asarray(floats), np.asarray(as_pil))


def test_hooks_act_on_the_inner_language_model(vlm):
    _, model = vlm
    inputs = model.prepare(["one", "two words"], [_image(20, 20), _image(40, 30)])
    seen: dict[str, list] = {"rows": [], "z": []}

    class Record:
        def wants(self, layer: int, n_queries: int) -> bool:
            return True

        def __call__(self, rows: AttentionRows) -> None:
            seen["rows"].append((rows.layer, rows.n_keys))

    def scale_z(layer: int, z: torch.Tensor) -> torch.Tensor:
        seen["z"].append((layer, tuple(z.shape)))
        return z * 2 if layer == 1 else None

    before = model.hf.config._attn_implementation
    plain = model.hf(**inputs).logits
    with attention_hooks(model.hf, Record()):
        hooked = model.hf(**inputs).logits
    torch.testing.assert_close(hooked, plain, atol=1e-5, rtol=1e-5)
    width = inputs.input_ids.shape[1]
    assert sorted({layer for layer, _ in seen["rows"]}) == [0, 1, 2]
    assert {keys for _, keys in seen["rows"]} == {width}  # the language model's sequence
    with head_output_hooks(model.hf, scale_z):
        scaled = model.hf(**inputs).logits
    assert seen["z"] == [(layer, (2, width, 4, 16)) for layer in range(3)]
    assert not torch.allclose(scaled, plain)
    assert model.hf.config._attn_implementation == before


def test_qwen2_5_vl_geometry_and_hooks_are_its_language_models():
    """Qwen2.5-VL's processor needs torchvision, so its inputs are made by hand here."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 8,
        "window_size": 16,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=290,
        video_token_id=291,
        vision_start_token_id=292,
    )
    model = Model.from_hf(Qwen2_5_VLForConditionalGeneration(config), tiny_llama().tokenizer)
    assert (model.geometry.n_layers, model.geometry.n_heads, model.geometry.n_kv_heads) == (3, 4, 2)
    grid = (1, 4, 6)  # [time, height, width] in 8x8 patches, merged 2x2 into 6 image tokens
    ids = torch.tensor([[5, 6, 292] + [290] * 6 + [7, 8, 9]])
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(24, 3 * 2 * 8 * 8),
        "image_grid_thw": torch.tensor([grid]),
    }
    plain = model.hf(**kwargs).logits
    seen = []

    class Record:
        def wants(self, layer: int, n_queries: int) -> bool:
            return True

        def __call__(self, rows: AttentionRows) -> None:
            seen.append((rows.layer, tuple(rows.probs.shape)))

    with attention_hooks(model.hf, Record()):
        hooked = model.hf(**kwargs).logits
    torch.testing.assert_close(hooked, plain, atol=1e-5, rtol=1e-5)
    assert sorted(set(seen)) == [(layer, (1, 4, 12, 12)) for layer in range(3)]
    with pytest.raises(InputError, match="wrapped without its processor"):
        model.prepare("hi", _image(10, 10))


def test_text_path_is_unchanged_for_a_text_only_model():
    model = tiny_llama()
    inputs = model.prepare(["hello", "hi"])
    encoding = model.encode(["hello", "hi"])
    assert sorted(inputs) == sorted(encoding)
    for key in encoding:
        assert torch.equal(inputs[key], encoding[key])
    assert inputs.kinds.tolist() == [[0] * 5, [2, 2, 2, 0, 0]]


def _no_install(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"tried to run {args}")


def _saved(model: Model, folder: Path) -> Path:
    model.hf.save_pretrained(folder)
    model.processor.save_pretrained(folder)
    return folder


def test_load_model_reads_a_vlm_folder_with_its_processor(vlm, tmp_path: Path):
    name, model = vlm
    loaded = load_model(_saved(model, tmp_path))
    assert type(loaded.hf) is type(model.hf)
    assert type(loaded.processor) is type(model.processor)
    assert loaded.geometry == model.geometry
    inputs = loaded.prepare("a cat", _image(30, 40))
    assert inputs.n_image_tokens == [tokens_per_image(name, model, 30, 40)]
    torch.testing.assert_close(loaded.hf(**inputs).logits, model.hf(**inputs).logits)


def test_bridge_boots_a_vlm_from_its_folder_without_installing(tmp_path: Path, monkeypatch):
    loaded = load_model(_saved(tiny_llava(), tmp_path))
    inputs = loaded.prepare("a cat", _image(30, 30))
    logits = loaded.hf(**inputs).logits
    monkeypatch.setattr(subprocess, "check_call", _no_install)
    bridge = loaded.bridge
    assert bridge.processor is loaded.processor
    through_bridge = bridge(inputs.input_ids, pixel_values=inputs["pixel_values"])
    torch.testing.assert_close(through_bridge, logits, atol=1e-4, rtol=1e-4)


def test_bridge_refuses_a_vlm_without_a_saved_processor(tmp_path: Path, monkeypatch):
    model = tiny_llava()
    model.tokenizer.save_pretrained(tmp_path)  # a tokenizer but no processor there
    model.tokenizer.name_or_path = str(tmp_path)
    monkeypatch.setattr(subprocess, "check_call", _no_install)
    with pytest.raises(UnsupportedModelError, match=r"save it there with model\.processor"):
        _ = model.bridge


def test_errors():
    llava = tiny_llava()
    with pytest.raises(InputError, match="text-only model: it takes no images"):
        tiny_llama().prepare("hi", _image(10, 10))
    with pytest.raises(InputError, match="No image file at"):
        llava.prepare("hi", "/nonexistent/picture.png")
    with pytest.raises(InputError, match="2 image placeholder"):
        llava.prepare("<image><image> two", _image(10, 10))
    with pytest.raises(InputError, match="one entry per prompt"):
        llava.prepare(["a", "b"], [_image(10, 10)])
    with pytest.raises(InputError, match="uint8, or float in"):
        llava.prepare("hi", np.full((8, 8, 3), 2.0))


def test_unreadable_image_file(tmp_path: Path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="Cannot read the image file"):
        tiny_llava().prepare("hi", path)


def test_image_token_count_that_differs_from_the_processors():
    model = tiny_llava()
    model.hf.config.image_token_id = 3  # the model looks for another token than the processor's
    with pytest.raises(InputError, match=r"has 0 image tokens .* expanded its images into 16"):
        model.prepare("hi", _image(10, 10))


def test_pixels_come_in_the_models_dtype():
    model = tiny_llava()
    model.hf.to(torch.bfloat16)
    inputs = model.prepare("hi", _image(20, 20))
    assert inputs["pixel_values"].dtype == torch.bfloat16
    assert inputs.input_ids.dtype == torch.long
    assert model.hf(**inputs).logits.dtype == torch.bfloat16


def test_generate_takes_the_inputs_and_a_padded_row_generates_as_alone(vlm):
    _, model = vlm
    texts, images = ["a cat on a mat", "hi"], [_image(20, 30), _image(9, 9, seed=3)]
    batched = model.hf.generate(**model.prepare(texts, images), max_new_tokens=4, do_sample=False)
    for row in range(2):
        alone = model.hf.generate(
            **model.prepare(texts[row], images[row]), max_new_tokens=4, do_sample=False
        )
        assert batched[row, -4:].tolist() == alone[0, -4:].tolist()
