"""Circuit tasks: prompt structure, positions, corruptions, errors and metrics.

Unit tests run a tiny random Llama with a word-level tokenizer (every word of the prompts one
token, so fillers are single tokens as they are for a real BPE vocabulary); the byte
tokenizer of tests/tiny.py checks the multi-token rejections. Integration tests check IOI
and name-recall accuracy on the default model.
"""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from circuits.tasks import (
    CircuitTask,
    accuracy,
    colored_objects,
    ioi,
    ioi_templates,
    last_logits,
    logit_difference,
    logit_differences,
    name_recall,
    prompt_metrics,
)
from circuits.templates import Template, shipped
from interp.errors import ConfigError, InputError
from interp.models import Model

NAMES = ["Mary", "John", "Tom", "Anna", "Paul", "Kate"]
PLACES = ["store", "park"]
OBJECTS = ["ring", "cake"]
# Two templates of different token lengths, so rows are padded; one of each family.
TEMPLATES = [
    "Then, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "When {IO} and {S} met, {S} smiled at",
]


def _word_model(corpus: str) -> Model:
    """A tiny Llama whose tokenizer has one token per word or punctuation run of `corpus`."""
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = sorted({piece for piece, _ in split.pre_tokenize_str(corpus)})
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return Model.from_hf(LlamaForCausalLM(config), tokenizer, spec="tiny-words")


def _corpus() -> str:
    co = shipped("colored_objects.json")
    words = [
        *NAMES, *PLACES, *OBJECTS, *co["colors"], *(c.capitalize() for c in co["colors"]),
        *co["objects"], *co["surfaces"], *co["openers"], "Smith", "Brown", "Hall",
    ]  # fmt: skip
    texts = [*TEMPLATES, co["template"], "Yesterday {F1} {L1} called {F2} {L2}. Then {Q}"]
    return " ".join(re.sub(r"[{}]", " ", t) for t in texts) + " " + " ".join(words) + " an a"


@pytest.fixture(scope="module")
def words() -> Model:
    return _word_model(_corpus())


def _ioi(model: Model, n: int = 12, **kwargs) -> CircuitTask:
    kwargs = {"templates": TEMPLATES, "names": NAMES, "places": PLACES, "objects": OBJECTS} | kwargs
    return ioi(model, n, **kwargs)


def _token(model: Model, word: str) -> int:
    (token,) = model.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return token


def _at(batch, positions: torch.Tensor) -> torch.Tensor:
    return batch.input_ids.gather(1, positions[:, None])[:, 0]


# --- templates -------------------------------------------------------------------------


def test_shipped_ioi_templates_are_15_baba_and_15_abba_and_the_heldout_ones_are_new() -> None:
    main, heldout = ioi_templates(), ioi_templates("heldout")
    families = []
    for text in (*main, *heldout):
        t = Template.parse(
            text, counts={"IO": 1, "S": 2}, optional=("PLACE", "OBJECT"), spaced=("IO", "S")
        )
        families.append("BABA" if t.slots.index("S") < t.slots.index("IO") else "ABBA")
    assert families[:30].count("BABA") == 15 and families[:30].count("ABBA") == 15
    assert len(set(main)) == 30 and len(heldout) == 6 and not set(main) & set(heldout)
    assert set(families[30:]) == {"BABA", "ABBA"}


@pytest.mark.parametrize(
    ("template", "culprit"),
    [
        ("Then, {S} and {IO} went home. Then Bob waved to", "{S} 1 time"),
        ("Then, {S} and {IO} went home. {S} waved to {NAME}", "unknown slot {NAME}"),
        ("Then, {S} and {IO} went to the {PLCE}. {S} waved to", "'PLACE'"),
        ("Then, {S} and {IO} went home. {S waved to", "unmatched brace"),
        ("{S} and {IO} went home. {S} waved to", "slot {S} must follow a space"),
    ],
)
def test_a_bad_template_is_a_one_line_error_naming_it(
    words: Model, template: str, culprit: str
) -> None:
    with pytest.raises(InputError, match=re.escape(culprit)) as error:
        _ioi(words, templates=[template])
    assert "\n" not in str(error.value) and template in str(error.value)


def test_render_spans_cover_each_slot_with_its_leading_space() -> None:
    t = Template.parse("Then, {S} and {IO} saw {S}", counts={"IO": 1, "S": 2})
    text, spans = t.render(["Ann", "Bo", "Cy"])
    assert text == "Then, Ann and Bo saw Cy"
    assert [text[a:b] for a, b in spans] == [" Ann", " Bo", " Cy"]


# --- IOI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", ["abc", "s2_io"])
def test_ioi_rows_pair_clean_and_corrupted_prompts_slot_by_slot(
    words: Model, corruption: str
) -> None:
    task = _ioi(words, 40, corruption=corruption)
    clean, bad = task.clean, task.corrupted
    assert clean.input_ids.shape == bad.input_ids.shape and len(task) == 40
    assert torch.equal(clean.attention_mask, bad.attention_mask)
    assert len(set(clean.lengths)) == 2  # both templates drawn: rows are left-padded
    pos = task.positions
    assert list(pos) == ["IO", "S1", "S1+1", "S2", "END"]
    assert (pos["END"] == clean.input_ids.shape[1] - 1).all()
    assert torch.equal(pos["S1+1"], pos["S1"] + 1)
    assert torch.equal(_at(clean, pos["IO"]), task.answer_ids)
    assert torch.equal(_at(clean, pos["S1"]), task.wrong_ids)
    assert torch.equal(_at(clean, pos["S2"]), task.wrong_ids)
    assert torch.equal(task.choice_ids, torch.stack([task.answer_ids, task.wrong_ids], 1))
    changed = clean.input_ids != bad.input_ids
    if corruption == "abc":
        io, s1, s2 = (_at(bad, pos[k]) for k in ("IO", "S1", "S2"))
        assert ((io != s1) & (io != s2) & (s1 != s2)).all()
        for new in (io, s1, s2):
            assert ((new != task.answer_ids) & (new != task.wrong_ids)).all()
        assert (changed.sum(1) == 3).all()
    else:
        assert torch.equal(_at(bad, pos["S2"]), task.answer_ids)
        assert torch.equal(_at(bad, pos["S1"]), task.wrong_ids)
        assert (changed.sum(1) == 1).all() and changed.gather(1, pos["S2"][:, None]).all()
    for row in range(len(task)):
        assert task.families[row] == ("BABA" if pos["S1"][row] < pos["IO"][row] else "ABBA")


def test_ioi_is_seeded_and_its_rows_are_distinct(words: Model) -> None:
    assert _ioi(words, seed=3).prompts == _ioi(words, seed=3).prompts
    assert _ioi(words, seed=3).prompts != _ioi(words, seed=4).prompts
    # 6 * 5 name pairs * 2 places * 2 objects + 6 * 5 for the template without them.
    everything = _ioi(words, 150)
    assert len(set(everything.prompts)) == 150
    # Templates take turns until one has used all its distinct prompts.
    assert _ioi(words, 40).families.count("ABBA") == 20
    assert everything.families.count("ABBA") == 30
    with pytest.raises(InputError, match=r"n=151 IOI prompts asked, .* only 150 distinct"):
        _ioi(words, 151)


def test_a_filler_that_is_not_one_token_is_refused_by_name(words: Model) -> None:
    with pytest.raises(InputError, match="IOI name 'Mary-Ann' is 3 tokens") as error:
        _ioi(words, names=[*NAMES, "Mary-Ann"])
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="IOI place to be one word without spaces, got 'car park'"):
        _ioi(words, places=["car park"])
    with pytest.raises(InputError, match="at least 5 distinct single-token IOI names"):
        _ioi(words, names=NAMES[:4])
    with pytest.raises(ConfigError, match=r"Unknown IOI corruption 'abd'\. Did you mean 'abc'"):
        _ioi(words, corruption="abd")


def test_the_byte_tokenizer_has_no_single_token_names(tiny: Model) -> None:
    with pytest.raises(InputError, match="got 0"):
        ioi(tiny, 4)
    with pytest.raises(InputError, match="IOI name 'Mary' is 5 tokens"):
        ioi(tiny, 4, names=["Mary", "John"])


def test_select_trims_padding_and_keeps_positions_on_the_same_tokens(words: Model) -> None:
    task = _ioi(words, 40)
    short = [i for i, n in enumerate(task.clean.lengths) if n < max(task.clean.lengths)]
    part = task.select(short)
    assert part.clean.input_ids.shape[1] == max(part.clean.lengths)
    assert part.prompts == tuple(task.prompts[i] for i in short)
    for name, where in part.positions.items():
        assert torch.equal(_at(part.clean, where), _at(task.clean, task.positions[name])[short])
    assert len(task.select(slice(0, 5))) == 5


# --- Colored Objects ----------------------------------------------------------------------


def test_colored_objects_positions_answers_and_mindiff(words: Model) -> None:
    task = colored_objects(words, 30)
    clean, bad, pos = task.clean, task.corrupted, task.positions
    decode = words.tokenizer.decode
    assert list(pos) == ["C1", "C2", "C3", "OBJ", "END"]
    assert (pos["END"] == clean.input_ids.shape[1] - 1).all()
    for row in range(len(task)):
        text = task.prompts[row]
        exemplar, query = text.split("\nQ: ")
        listed = [
            decode([int(clean.input_ids[row, pos[c][row]])]).strip() for c in ("C1", "C2", "C3")
        ]
        assert query.count(" " + listed[0] + " ") == 1 and not any(c in exemplar for c in listed)
        asked = decode([int(clean.input_ids[row, pos["OBJ"][row]])]).strip()
        colour = re.search(rf"(\w+) {asked}\b", query).group(1)
        assert decode([int(task.answer_ids[row])]) == " " + colour.capitalize()
        assert sorted(decode([int(i)]) for i in task.choice_ids[row]) == sorted(
            " " + c.capitalize() for c in listed
        )
        other = decode([int(bad.input_ids[row, pos["OBJ"][row]])]).strip()
        assert other != asked and re.search(rf"(\w+) {other}\b", query).group(1).capitalize() == (
            decode([int(task.wrong_ids[row])]).strip()
        )
    assert task.prompts[0].startswith("Q: On the ") and task.prompts[0].endswith("?\nA:")
    assert (clean.input_ids != bad.input_ids).sum(1).eq(1).all()


def test_colored_objects_rejects_a_multi_token_colour(words: Model) -> None:
    with pytest.raises(InputError, match="Colored Objects color 'sky-blue' is 3 tokens"):
        colored_objects(words, 4, colors=["red", "blue", "green", "black", "brown", "sky-blue"])
    with pytest.raises(InputError, match="at least 6 distinct"):
        colored_objects(words, 4, colors=["red", "blue", "green"])


# --- name recall --------------------------------------------------------------------------


def test_name_recall_asks_either_person_and_the_corruption_asks_the_other(words: Model) -> None:
    task = name_recall(
        words,
        20,
        templates=["Yesterday {F1} {L1} called {F2} {L2}. Then {Q}"],
        names=NAMES,
        surnames=["Smith", "Brown", "Hall"],
    )
    clean, bad, pos = task.clean, task.corrupted, task.positions
    end_clean, end_bad = _at(clean, pos["END"]), _at(bad, pos["END"])
    first = end_clean == _at(clean, pos["F1"])
    assert set(task.families) == {"first", "second"}
    assert torch.equal(first, torch.tensor([f == "first" for f in task.families]))
    assert torch.equal(end_bad, torch.where(first, _at(clean, pos["F2"]), _at(clean, pos["F1"])))
    assert torch.equal(
        task.answer_ids, torch.where(first, _at(clean, pos["L1"]), _at(clean, pos["L2"]))
    )
    assert torch.equal(
        task.wrong_ids, torch.where(first, _at(clean, pos["L2"]), _at(clean, pos["L1"]))
    )
    assert torch.equal(_at(clean, pos["ANS"]), task.answer_ids)
    with pytest.raises(InputError, match="must end with the query"):
        name_recall(words, 2, templates=["Then {Q} met {F1} {L1} and {F2} {L2}."])


# --- metrics ------------------------------------------------------------------------------


def test_logit_difference_and_accuracy_on_hand_made_logits(words: Model) -> None:
    task = _ioi(words, 3)
    logits = torch.zeros(3, len(words.tokenizer))
    rows = torch.arange(3)
    logits[rows, task.answer_ids] = torch.tensor([2.0, 1.0, 0.5])
    logits[rows, task.wrong_ids] = torch.tensor([1.0, 1.0, 3.0])
    logits[2, 0] = 9.0  # another token wins the vocabulary in row 2
    assert torch.equal(logit_difference(logits, task), torch.tensor([1.0, 0.0, -2.5]))
    assert accuracy(logits, task).tolist() == [True, False, False]  # a tie is not correct
    assert accuracy(logits, task, among="vocab").tolist() == [True, False, False]
    logits[0, 0] = 5.0
    assert accuracy(logits, task, among="vocab").tolist() == [False, False, False]
    with pytest.raises(ConfigError, match="Unknown accuracy kind"):
        accuracy(logits, task, among="top")  # type: ignore[arg-type]


def test_batched_runner_matches_one_plain_forward(words: Model) -> None:
    task = _ioi(words, 9)
    with torch.no_grad():
        plain = words.hf(**task.clean).logits[:, -1]
    for size in (1, 4, 64):
        assert torch.allclose(last_logits(words, task.clean, batch_size=size), plain, atol=1e-5)
    assert torch.allclose(logit_differences(words, task), logit_difference(plain, task))
    table = prompt_metrics(words, task)
    assert len(table) == 9 and table.provenance.inputs_hash == task.inputs_hash()
    assert table.data["correct"].tolist() == accuracy(plain, task).tolist()


# --- the default model --------------------------------------------------------------------


@pytest.mark.integration
def test_default_model_solves_ioi_and_name_recall(default_model: Model) -> None:
    task = ioi(default_model, 60)
    clean = last_logits(default_model, task.clean)
    assert accuracy(clean, task).float().mean() >= 0.9
    assert logit_difference(clean, task).mean() > 0
    recall = name_recall(default_model, 40)
    assert accuracy(last_logits(default_model, recall.clean), recall).float().mean() >= 0.9
