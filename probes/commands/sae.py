"""`interp sae train|latents`: residual SAEs trained with sae-lens, and what their latents say.

`train` collects a token hook point (`blocks.{layer}.hook_resid_post` by default) on the
shipped prose (`data/haystacks`, one text per paragraph) or the user's texts, trains a
sae-lens standard SAE on all but every `--holdout-every`-th text, and scores it on those:
variance explained, L0, and the model's next-token loss clean vs with the reconstruction
spliced in. It writes the SAE in sae-lens's format with the toolkit's provenance, a
`summary.json` and the manifest. `latents` loads such an SAE (refusing one of another
model) and writes the top latents of each token of a prompt and, for `--latent`, which
heads write it. Method notes: docs/methods.md §11.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from interp.cli.common import (
    DeviceOption,
    ModelOption,
    StaticOption,
    check_choice,
    export_figures,
    load_model_or_fail,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
)

sae_app = typer.Typer(
    help="Sparse autoencoders: train them on a model's activations, read their latents.",
    no_args_is_help=True,
)
POINTS = ("hook_resid_post", "hook_resid_pre", "hook_attn_out", "hook_mlp_out")
OutOption = typer.Option(
    "--out", "-o", help="Output folder. Default: results/sae-<command>-<model>-<time>."
)


def hook_name(hook: str, layer: int | None) -> str:
    """The full TL name from `--hook` (a point, or a full name) and `--layer`.

    Raises:
        InputError: an unknown point, no layer for a point, or a full name whose layer
            disagrees with `--layer`.
    """
    from interp.errors import InputError, did_you_mean

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


def shipped_texts() -> list[str]:
    """The shipped prose: every paragraph of `data/haystacks/*.txt`, files in name order."""
    from interp.prompts import data_path, load_prompts

    return [
        text for path in sorted(data_path("haystacks").glob("*.txt")) for text in load_prompts(path)
    ]


def split_texts(texts: list[str], every: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): every `every`-th text, from the first, is held out."""
    from interp.errors import InputError

    if every < 2:
        raise InputError(f"--holdout-every must be at least 2, got {every}.")
    held = texts[::every]
    train = [text for index, text in enumerate(texts) if index % every]
    if not train:
        raise InputError(f"{len(texts)} text(s) leave none to train on after holding out.")
    return train, held


@sae_app.command("train")
def sae_train(
    layer: Annotated[
        int | None, typer.Option(help="Layer of the hook point (0-based). Required with a point.")
    ] = None,
    hook: Annotated[
        str,
        typer.Option(
            help="Hook point: hook_resid_post, hook_resid_pre, hook_attn_out or hook_mlp_out"
            " (with --layer), or a full name such as blocks.3.hook_resid_post."
        ),
    ] = "hook_resid_post",
    model: Annotated[str | None, ModelOption] = None,
    texts: Annotated[
        list[Path] | None,
        typer.Option(
            help="Text files (.txt: blank-line separated; .jsonl: a 'text' field per line);"
            " repeat for several. Default: the paragraphs of the shipped data/haystacks."
        ),
    ] = None,
    holdout_every: Annotated[
        int, typer.Option(help="Every N-th text is held out to score the SAE, not trained on.")
    ] = 8,
    d_sae: Annotated[int, typer.Option(help="Latents.")] = 1024,
    l1_coefficient: Annotated[
        float, typer.Option(help="sae-lens's L1 coefficient (on the normalised rows).")
    ] = 0.5,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    epochs: Annotated[int, typer.Option(help="Passes over the training tokens.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Tokens per training step.")] = 256,
    normalize: Annotated[
        str,
        typer.Option(
            help="'constant_norm_rescale' (every token scaled to norm sqrt(d_model), so the"
            " few massive-norm tokens do not dominate the error) or 'none'."
        ),
    ] = "constant_norm_rescale",
    skip_first: Annotated[
        bool,
        typer.Option(
            help="Leave each text's first token (the attention sink) out of training and"
            " unreconstructed in the spliced loss."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the SAE's initialisation and shuffles.")] = 0,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
) -> None:
    """Train a residual-stream SAE with sae-lens and score its reconstruction.

    Reports variance explained and L0 on the held-out texts, and the model's next-token
    loss on them clean and with the reconstruction spliced in.
    """
    record = start_record("sae train", locals())
    with user_errors():
        from interp.prompts import load_prompts
        from interp.saes import (
            Normalize,
            SAETrainConfig,
            reconstruction,
            splice_loss,
            train_sae,
        )

        name = hook_name(hook, layer)
        check_choice(normalize, get_args(Normalize), "--normalize")
        config = SAETrainConfig(
            d_sae=d_sae,
            l1_coefficient=l1_coefficient,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            normalize=normalize,  # type: ignore[arg-type]
            seed=seed,
        )
        if texts:
            dataset = [text for path in texts for text in load_prompts(path)]
            record.inputs(texts)
        else:
            from interp.prompts import data_path

            dataset = shipped_texts()
            record.inputs(sorted(data_path("haystacks").glob("*.txt")))
        train, held = split_texts(dataset, holdout_every)
        check_sae_fits(model, device, config.d_sae, config.batch_size)
        folder = result_folder(out, "sae-train", model, record)
        loaded = load_model_or_fail(model, device)
        started = time.perf_counter()
        acts = _collect(loaded, train, name, skip_first, "collecting")
        held_acts = _collect(loaded, held, name, skip_first, "collecting held-out")
        collected = time.perf_counter()
        rows = len(acts.rows())  # train_sae refuses none
        steps = config.epochs * (rows // min(config.batch_size, rows)) if rows else 0
        update, bar = progress_bar(steps, "training", unit="step")
        with bar:
            trained = train_sae(acts, config, progress=update)
        trained_at = time.perf_counter()
        fit = reconstruction(trained.sae, held_acts)
        update, bar = progress_bar(len(held), "spliced loss")
        with bar:
            loss = splice_loss(loaded, trained, held, progress=update)
        saved = trained.save(folder / "sae")
        record.wrote(sorted(saved.iterdir()))
        summary = {
            "hook": name,
            "d_sae": config.d_sae,
            "skip_first": skip_first,
            "train_texts": len(train),
            "train_tokens": rows,
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
        path = folder / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        record.wrote([path])
        record.write(folder, summary=summary)
        typer.echo(
            f"{name}: {config.d_sae} latents trained on {summary['train_tokens']} tokens of"
            f" {len(train)} texts in {summary['train_s']:.0f} s"
        )
        typer.echo(
            f"held out ({len(held)} texts): variance explained {fit.variance_explained:.3f},"
            f" L0 {fit.l0:.1f}; next-token loss {loss.clean:.3f} clean, {loss.spliced:.3f}"
            f" spliced ({loss.increase:+.3f} nats over {loss.n_tokens} tokens)"
        )
        typer.echo(f"SAE (sae-lens format) in {saved}")


def _collect(loaded: Any, texts: list[str], hook: str, skip_first: bool, what: str) -> Any:
    from interp.activations import collect_tokens

    update, bar = progress_bar(len(texts), what, unit="text")
    with bar:
        return collect_tokens(loaded, texts, hook, skip_first=skip_first, progress=update)


@sae_app.command("latents")
def sae_latents(
    sae: Annotated[
        Path,
        typer.Option(help="An SAE folder in sae-lens's format: `interp sae train`'s sae/, or any."),
    ],
    prompt: Annotated[str, typer.Option(help="The text to read the latents of.")],
    model: Annotated[str | None, ModelOption] = None,
    top_k: Annotated[int, typer.Option(help="Latents kept per token.")] = 5,
    latent: Annotated[
        int | None, typer.Option(help="Also attribute this latent to the heads that write it.")
    ] = None,
    position: Annotated[
        int, typer.Option(help="Token position of the attribution (negative: from the end).")
    ] = -1,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Each token's top SAE latents; with --latent, each head's direct contribution to it."""
    record = start_record("sae latents", locals())
    with user_errors():
        from interp.errors import InputError
        from interp.figures import head_heatmap
        from interp.results import csv_path
        from interp.saes import TrainedSAE
        from probes.sae_latents import latent_attribution, top_latents

        if top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {top_k}.")
        if not prompt.strip():
            raise InputError("--prompt is empty.")
        trained = TrainedSAE.load(sae)
        record.inputs([sae])
        folder = result_folder(out, "sae-latents", model, record)
        loaded = load_model_or_fail(model, device)
        trained.check(loaded)
        table = top_latents(loaded, trained, prompt, k=top_k)
        path = table.save(folder / "latents.parquet", csv=True)
        record.wrote([path, csv_path(path)])
        for pos, rows in table.data.groupby("position"):
            listed = ", ".join(f"{r.latent} ({r.activation:.2f})" for r in rows.itertuples())
            typer.echo(f"{pos:4d} {rows.token.iloc[0]!r:>14}: {listed}")
        if latent is not None:
            heads = latent_attribution(loaded, trained, prompt, latent, position=position)
            path = heads.save(folder / f"latent_{latent}_heads.parquet", csv=True)
            record.wrote([path, csv_path(path)])
            title = f"Direct contribution of each head to latent {latent} ({trained.hook})"
            figure = head_heatmap(heads, "score", title, loaded.geometry, label="contribution")
            record.wrote(export_figures({f"latent_{latent}_heads": figure}, folder, static))
            first = heads.data.iloc[0]
            top = heads.data.reindex(heads.data.score.abs().sort_values(ascending=False).index)
            listed = ", ".join(f"{r.label} {r.score:+.2f}" for r in top.head(5).itertuples())
            typer.echo(
                f"latent {latent} at position {first.position}: pre-activation"
                f" {first.pre_activation:.2f}; heads {top.score.sum():+.2f}, top: {listed}"
            )
        record.write(folder)
        typer.echo(f"tables in {folder}")


def check_sae_fits(model: str | None, device: str, d_sae: int, batch_size: int) -> None:
    """Refuse, before loading, an SAE whose training cannot fit the device's memory.

    Every hook point `train` offers is d_model wide (read from the config alone). Training
    holds the weights (2·d_in·d_sae + d_sae + d_in floats), their gradients and Adam's two
    moments: four copies in float32, plus a batch of latents.
    """
    import os

    import torch

    from interp.errors import InputError
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
