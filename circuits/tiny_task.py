"""A random circuit task on the tiny byte-level model (`interp.tiny_models`), for unit tests
and the docstring examples of the circuit analyzers (IOI needs word-level tokens)."""

from __future__ import annotations

import torch

from circuits.tasks import CircuitTask
from interp.encoding import Encoding
from interp.models import Model


def tiny_task(model: Model, n: int = 6, seed: int = 0) -> CircuitTask:
    """n prompts of 8-11 random bytes, left-padded; the corruption changes three of them.

    Positions mimic IOI's: "IO" 1, "S1" 2, "S1+1" 3, "S2" len-3 (counted in each row's own
    tokens), "END" the last column. Rows alternate between two "templates".
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = model.hf.config.vocab_size
    lengths = [8 + i % 4 for i in range(n)]
    clean_rows, corrupt_rows, spots = [], [], []
    for length in lengths:
        row = torch.randint(3, vocab, (length,), generator=generator)
        spot = {"IO": 1, "S1": 2, "S1+1": 3, "S2": length - 3}
        changed = row.clone()
        for name in ("IO", "S1", "S2"):
            changed[spot[name]] = torch.randint(3, vocab, (1,), generator=generator)
        clean_rows.append(row.tolist())
        corrupt_rows.append(changed.tolist())
        spots.append(spot)
    clean = Encoding.left_padded(clean_rows, 0)
    corrupted = Encoding.left_padded(corrupt_rows, 0)
    width = clean.input_ids.shape[1]
    positions = {
        name: torch.tensor(
            [width - n_tok + s[name] for n_tok, s in zip(lengths, spots, strict=True)]
        )
        for name in ("IO", "S1", "S1+1", "S2")
    }
    positions["END"] = torch.full((n,), width - 1)
    answer = torch.randint(3, vocab, (n,), generator=generator)
    wrong = (answer + 1 + torch.randint(0, 50, (n,), generator=generator) - 3) % (vocab - 3) + 3
    templates = tuple(f"t{i % 2}" for i in range(n))
    return CircuitTask(
        name="tiny",
        clean=clean,
        corrupted=corrupted,
        answer_ids=answer,
        wrong_ids=wrong,
        choice_ids=torch.stack([answer, wrong], 1),
        positions=positions,
        prompts=tuple(str(r) for r in clean_rows),
        corrupted_prompts=tuple(str(r) for r in corrupt_rows),
        templates=templates,
        families=templates,
        config={"task": "tiny", "n": n, "seed": seed},
    )
