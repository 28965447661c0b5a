"""The generation driver: batched greedy equals HF generate, stopping, sampling, hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import InputError
from interp.generation import GenerationConfig, _choose, decode, generate, prefill
from interp.hooks import attention_hooks
from interp.interventions import HeadScale
from interp.interventions.vhr import VHR, VhrConfig
from interp.tiny_models import tiny_llava


def _prompts() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 200, (n,), generator=generator) for n in (40, 33, 1, 37)]


def test_batched_greedy_equals_hf_generate_per_prompt(tiny) -> None:
    prompts = _prompts()
    out = generate(tiny, prompts, GenerationConfig(max_new_tokens=8), batch_size=3)
    for prompt, got in zip(prompts, out, strict=True):
        reference = tiny.hf.generate(prompt[None], max_new_tokens=8, do_sample=False)
        assert torch.equal(got.prompt_ids, prompt)
        assert got.response_ids.tolist() == reference[0, len(prompt) :].tolist()
        assert got.finish_reason == "length" and got.boundary == len(prompt)
        assert torch.equal(got.token_ids, reference[0])
        assert got.text == tiny.tokenizer.decode(got.response_ids, skip_special_tokens=True)


def test_eos_and_stop_strings_end_rows_one_by_one(tiny) -> None:
    prompts = _prompts()
    plain = generate(tiny, prompts, GenerationConfig(max_new_tokens=8), batch_size=4)
    eos = int(plain[0].response_ids[2])  # row 0 ends at its third token, EOS not kept
    tiny.hf.generation_config.eos_token_id = eos
    ended = generate(tiny, prompts, GenerationConfig(max_new_tokens=8), batch_size=4)
    assert ended[0].finish_reason == "eos"
    assert ended[0].response_ids.tolist() == plain[0].response_ids[:2].tolist()
    for before, after in zip(plain[1:], ended[1:], strict=True):  # the others go on
        cut = (before.response_ids == eos).nonzero()
        n = int(cut[0]) if len(cut) else 8
        assert after.response_ids.tolist() == before.response_ids[:n].tolist()
    kept = generate(
        tiny, prompts, GenerationConfig(max_new_tokens=8, stop_at_eos=False), batch_size=4
    )
    assert [g.response_ids.tolist() for g in kept] == [g.response_ids.tolist() for g in plain]
    stop = tiny.tokenizer.decode(plain[3].response_ids[3:5])  # completed by the 5th token
    stopped = generate(tiny, prompts, GenerationConfig(max_new_tokens=8, stop=(stop,)))
    assert stopped[3].finish_reason == "stop"
    assert stopped[3].response_ids.tolist() == plain[3].response_ids[:5].tolist()
    assert stopped[3].text.endswith(stop)


def test_sampling_is_seeded_per_prompt_and_stays_in_the_nucleus(tiny) -> None:
    prompts = _prompts()
    config = GenerationConfig(max_new_tokens=6, temperature=1.5, top_p=0.9, seed=3)
    together = generate(tiny, prompts, config, batch_size=4)
    alone = generate(tiny, prompts, config, batch_size=1)
    assert [g.response_ids.tolist() for g in together] == [g.response_ids.tolist() for g in alone]
    other = generate(tiny, prompts, GenerationConfig(max_new_tokens=6, temperature=1.5, seed=4))
    assert [g.response_ids.tolist() for g in other] != [g.response_ids.tolist() for g in alone]
    import numpy as np

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, 4)
    streams = [np.random.default_rng([0, i]) for i in range(4000)]
    drawn = _choose(logits, GenerationConfig(max_new_tokens=1, temperature=1.0, top_p=0.7), streams)
    counts = torch.bincount(drawn, minlength=4).double() / 4000
    assert counts[2:].sum() == 0  # outside the nucleus {0, 1}
    assert abs(counts[0] - 0.5 / 0.8) < 0.03


class _Rows:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer == 0

    def __call__(self, rows) -> None:
        self.shapes.append(tuple(rows.probs.shape))


def test_hooks_see_one_query_row_per_step_and_steps_report_rows(tiny) -> None:
    prompts = _prompts()
    hook, steps = _Rows(), []
    with attention_hooks(tiny.hf, hook):
        out = generate(tiny, prompts, GenerationConfig(max_new_tokens=5), on_step=steps.append)
    plain = generate(tiny, prompts, GenerationConfig(max_new_tokens=5))
    assert [g.response_ids.tolist() for g in out] == [g.response_ids.tolist() for g in plain]
    decode = [s for s in hook.shapes if s[2] == 1]
    assert len(decode) == 5 and decode[0] == (4, 4, 1, 40)  # [batch, head, query, key]
    assert [s.index for s in steps] == list(range(5))
    assert steps[0].rows == (2, 1, 3, 0)  # shortest first
    assert steps[0].padding.tolist() == [39, 7, 3, 0]
    assert all(bool(s.kept.all()) for s in steps)


def test_intervention_with_cache_equals_full_forwards(tiny) -> None:
    prompt = _prompts()[0]
    scale = HeadScale("L1H2", alpha=0.0)
    with scale.applied(tiny):
        got = generate(tiny, prompt, GenerationConfig(max_new_tokens=5))[0]
        ids = prompt[None]
        with torch.no_grad():
            for _ in range(5):
                ids = torch.cat([ids, tiny.hf(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert got.response_ids.tolist() == ids[0, len(prompt) :].tolist()
    plain = generate(tiny, prompt, GenerationConfig(max_new_tokens=5))[0]
    assert plain.response_ids.tolist() != got.response_ids.tolist()  # the edit changes tokens


def test_chat_template_and_bad_prompts(tiny) -> None:
    with pytest.raises(InputError, match="no chat template"):
        generate(tiny, "hi", GenerationConfig(max_new_tokens=2), chat=True)
    tiny.tokenizer.chat_template = "{% for m in messages %}<{{ m.content }}>{% endfor %}"
    out = generate(tiny, "hi", GenerationConfig(max_new_tokens=2), chat=True)[0]
    assert tiny.tokenizer.decode(out.prompt_ids) == "<hi>"
    with pytest.raises(InputError, match="token ids; chat=True"):
        generate(tiny, [torch.tensor([5, 6])], GenerationConfig(max_new_tokens=2), chat=True)
    with pytest.raises(InputError, match=r"prompt plus max_new_tokens has 520 tokens.*512"):
        generate(tiny, torch.full((510,), 7), GenerationConfig(max_new_tokens=10))
    with pytest.raises(InputError, match=r"shape \(1, 5\)"):
        generate(tiny, [torch.ones(1, 5, dtype=torch.long)], GenerationConfig(max_new_tokens=2))
    with pytest.raises(InputError, match="empty"):
        generate(tiny, [""], GenerationConfig(max_new_tokens=2))


def test_dropping_finished_rows_keeps_every_rows_tokens(tiny) -> None:
    prompts = _prompts()
    plain = generate(tiny, prompts, GenerationConfig(max_new_tokens=8), batch_size=4)
    tiny.hf.generation_config.eos_token_id = int(plain[0].response_ids[2])  # row 0 stops
    config = GenerationConfig(max_new_tokens=8)
    prefilled = prefill(tiny, prompts)
    runs = {}
    for drop in (False, True):
        hook, steps = _Rows(), []
        with attention_hooks(tiny.hf, hook):
            out = decode(tiny, prefilled.select(range(4)), config, steps.append, drop)
        runs[drop] = (out, hook.shapes, steps)
    (full, full_shapes, full_steps), (dropped, shapes, steps) = runs[False], runs[True]
    assert [g.response_ids.tolist() for g in dropped] == [g.response_ids.tolist() for g in full]
    assert [g.finish_reason for g in dropped] == [g.finish_reason for g in full]
    assert full[0].finish_reason == "eos" and len(steps) == len(full_steps)
    assert steps[0].rows == (0, 1, 2, 3) and 0 not in steps[-1].rows  # row 0 left
    decode_batches = [shape[0] for shape in shapes if shape[2] == 1]
    assert decode_batches[0] == 4 and decode_batches[-1] < 4
    assert all(shape[0] == 4 for shape in full_shapes)
    for got, want in zip(steps, full_steps, strict=True):
        index = list(want.rows)
        rows = [index.index(r) for r in got.rows]
        assert got.tokens.tolist() == want.tokens[rows].tolist()
        assert got.padding.tolist() == want.padding[rows].tolist()
        torch.testing.assert_close(got.logits, want.logits[rows], rtol=0, atol=1e-5)


def _image_batch() -> tuple[list[str], list]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8), None]
    images.append(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return ["a cat sat on", "hello there my friend", "what"], images


def test_with_images_greedy_equals_hf_generate_per_prompt() -> None:
    model = tiny_llava()
    texts, images = _image_batch()
    config = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    out = generate(model, texts, config, images=images, batch_size=3)  # one padded batch
    for text, image, got in zip(texts, images, out, strict=True):
        inputs = model.prepare(text, image)
        reference = model.hf.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        assert torch.equal(got.prompt_ids, inputs.input_ids[0])  # images expanded
        assert got.response_ids.tolist() == reference[0, inputs.input_ids.shape[1] :].tolist()


def test_vhr_chooses_on_the_whole_prompt_as_under_hf_generate() -> None:
    model = tiny_llava(n_layers=4)
    texts, images = _image_batch()
    vhr = VHR(VhrConfig(alpha=4.0, last_layers=3))
    config = GenerationConfig(max_new_tokens=5, stop_at_eos=False)
    with vhr.applied(model):
        ours = generate(model, texts[:1], config, images=images[:1])[0].response_ids.tolist()
        inputs = model.prepare(texts[0], images[0])
        theirs = model.hf.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    plain = generate(model, texts[:1], config, images=images[:1])[0].response_ids.tolist()
    assert ours == theirs[0, inputs.input_ids.shape[1] :].tolist()
    assert ours != plain  # alpha 4 changes the tokens, so the match above is not vacuous


def test_bad_image_generation_requests_are_one_line_errors() -> None:
    model = tiny_llava()
    texts, images = _image_batch()
    config = GenerationConfig(max_new_tokens=2)
    with pytest.raises(InputError, match="one entry"):
        generate(model, texts, config, images=images[:2])
    with pytest.raises(InputError, match="must be texts"):
        generate(model, [[5, 6, 7]], config, images=[None])
    with pytest.raises(InputError, match="share_prefix"):
        generate(model, texts, config, images=images, share_prefix=True)
    long = " ".join(["word"] * 300)
    with pytest.raises(InputError, match="context"):
        generate(model, [long], config, images=images[:1])
