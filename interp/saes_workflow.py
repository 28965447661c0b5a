"""`interp sae train` in one call: collect a hook point, train an SAE, score it held out.

Collects a token hook point on texts (the shipped prose by default: every paragraph of
`data/haystacks`), trains a sae-lens standard SAE (`interp.saes.train_sae`) on all but every
`holdout_every`-th text, and scores it on those: variance explained, L0, and the model's
next-token loss clean vs with the reconstruction spliced in. Method notes: docs/methods.md
§11.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.config import Config
from interp.errors import InputError, did_you_mean
from interp.models import Model
from interp.saes import SAETrainConfig, TrainedSAE, reconstruction, splice_loss, train_sae
from interp.work import StageProgress, for_stage

POINTS = ("hook_resid_post", "hook_resid_pre", "hook_attn_out", "hook_mlp_out")


def hook_name(hook: str, layer: int | None) -> str:
    """The full TL name from `--hook` (a point, or a full name) and `--layer`.

    Raises:
        InputError: an unknown point, no layer for a point, or a full name whose layer
            disagrees with `--layer`.
    """
    full = re.fullmatch(r"blocks\.(\d+)\.(\w+)", hook)
    point = full.group(2) if full else hook
    if point not in POINTS:
        raise InputError(
            f"Unknown hook point {hook!r}; give one of {', '.join(POINTS)} with --layer, or a"
            " full name such as blocks.3.hook_resid_post." + did_you_mean(point, POINTS)
        )
    if full is not None:
        if layer is not None and layer != int(full.group(1)):
            raise InputError(f"--hook {hook} names layer {full.group(1)}, --layer {layer}.")
        return hook
    if layer is None:
        raise InputError(f"--hook {hook} needs --layer (or give blocks.L.{hook}).")
    if layer < 0:
        raise InputError(f"--layer must be at least 0, got {layer}.")
    return f"blocks.{layer}.{hook}"


def text_files(paths: Sequence[Path] = ()) -> list[Path]:
    """The text files a run reads: `paths`, or the shipped `data/haystacks/*.txt`."""
    from interp.prompts import data_path

    return list(paths) or sorted(data_path("haystacks").glob("*.txt"))


def load_texts(paths: Sequence[Path] = ()) -> list[str]:
    """Every text of the files (.txt: blank-line separated; .jsonl: 'text' per line)."""
    from interp.prompts import load_prompts

    return [text for path in text_files(paths) for text in load_prompts(path)]


def split_texts(texts: list[str], every: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): every `every`-th text, from the first, is held out."""
    if every < 2:
        raise InputError(f"--holdout-every must be at least 2, got {every}.")
    held = texts[::every]
    train = [text for index, text in enumerate(texts) if index % every]
    if not train:
        raise InputError(f"{len(texts)} text(s) leave none to train on after holding out.")
    return train, held


@dataclass(frozen=True, kw_only=True)
class SAERunConfig(Config):
    """What to train on and how it is scored; the SAE's own parameters are in `sae`.

    Attributes:
        hook: the full hook name, e.g. blocks.3.hook_resid_post (see `hook_name`).
        holdout_every: every N-th text is held out to score the SAE, not trained on.
        skip_first: leave each text's first token (the attention sink) out of training and
            unreconstructed in the spliced loss.
        sae: the SAE's training parameters.
    """

    hook: str
    holdout_every: int = 8
    skip_first: bool = False
    sae: SAETrainConfig = field(default_factory=SAETrainConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        hook_name(self.hook, None)


@dataclass(frozen=True)
class SAERun:
    """What `train_and_score` returns: the SAE and the run's summary (`summary.json`)."""

    trained: TrainedSAE
    summary: dict[str, Any]

    def summary_lines(self) -> list[str]:
        """What the SAE was trained on, and how well it does on the held-out texts."""
        s = self.summary
        return [
            f"{s['hook']}: {s['d_sae']} latents trained on {s['train_tokens']} tokens of"
            f" {s['train_texts']} texts in {s['train_s']:.0f} s",
            f"held out ({s['heldout_texts']} texts): variance explained"
            f" {s['variance_explained']:.3f}, L0 {s['l0']:.1f}; next-token loss"
            f" {s['loss_clean']:.3f} clean, {s['loss_spliced']:.3f} spliced"
            f" ({s['loss_increase']:+.3f} nats over {s['predicted_tokens']} tokens)",
        ]


def train_and_score(
    model: Model,
    texts: list[str],
    config: SAERunConfig,
    progress: StageProgress | None = None,
) -> SAERun:
    """Train an SAE on `texts` minus the held-out ones and score it on those.

    `progress(stage, done, total)` reports each stage: collecting, collecting held-out,
    training, spliced loss.

    Example:
        >>> config = SAERunConfig(hook="blocks.3.hook_resid_post")
        >>> run = train_and_score(model, load_texts(), config)  # doctest: +SKIP
        >>> run.summary["variance_explained"]  # doctest: +SKIP
    """
    from interp.activations import collect_tokens

    train, held = split_texts(texts, config.holdout_every)
    started = time.perf_counter()
    acts, held_acts = (
        collect_tokens(
            model,
            part,
            config.hook,
            skip_first=config.skip_first,
            progress=for_stage(progress, name),
        )
        for part, name in ((train, "collecting"), (held, "collecting held-out"))
    )
    collected = time.perf_counter()
    trained = train_sae(acts, config.sae, progress=for_stage(progress, "training"))
    trained_at = time.perf_counter()
    fit = reconstruction(trained.sae, held_acts)
    loss = splice_loss(model, trained, held, progress=for_stage(progress, "spliced loss"))
    summary = {
        "hook": config.hook,
        "d_sae": config.sae.d_sae,
        "skip_first": config.skip_first,
        "train_texts": len(train),
        "train_tokens": len(acts.rows()),
        "heldout_texts": len(held),
        "heldout_tokens": len(held_acts.rows()),
        "variance_explained": fit.variance_explained,
        "l0": fit.l0,
        "mse": fit.mse,
        "loss_clean": loss.clean,
        "loss_spliced": loss.spliced,
        "loss_increase": loss.increase,
        "predicted_tokens": loss.n_tokens,
        "collect_s": round(collected - started, 1),
        "train_s": round(trained_at - collected, 1),
        "evaluate_s": round(time.perf_counter() - trained_at, 1),
    }
    return SAERun(trained, summary)


def check_sae_fits(model: str | None, device: str, d_sae: int, batch_size: int) -> None:
    """Refuse, before loading, an SAE whose training cannot fit the device's memory.

    Every hook point `train` offers is d_model wide (read from the config alone). Training
    holds the weights (2·d_in·d_sae + d_sae + d_in floats), their gradients and Adam's two
    moments: four copies in float32, plus a batch of latents.
    """
    import os

    import torch

    from interp.models import load_config
    from interp.placement import check_device

    check_device(device)
    d_in = load_config(model).get_text_config().hidden_size
    needed = 4 * 4 * (2 * d_in * d_sae + d_sae + d_in) + 4 * 2 * batch_size * d_sae
    where = torch.device(device)
    if where.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(where).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total:
        raise InputError(
            f"--d-sae {d_sae}: training it on d_model={d_in} activations needs about"
            f" {needed / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB of {where.type}"
            " memory; use fewer latents."
        )
