"""`interp sae train|latents`: residual SAEs trained with sae-lens, and what their latents say.

`train` runs `interp.saes_workflow.train_and_score` (collect a hook point on the shipped
prose or the user's texts, train on all but every `--holdout-every`-th text, score on those)
and writes the SAE in sae-lens's format with the toolkit's provenance, a `summary.json` and
the manifest. `latents` runs `probes.sae_latents.read_latents` on an SAE (refusing one of
another model): the top latents of each token of a prompt and, for `--latent`, which heads
write it. Method notes: docs/methods.md §11.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from interp.cli.common import (
    DeviceOption,
    ModelOption,
    StaticOption,
    check_choice,
    load_model_or_fail,
    result_folder,
    stage_bars,
    start_record,
    user_errors,
    write_outputs,
)

OutOption = typer.Option(
    "--out", "-o", help="Output folder. Default: results/sae-<command>-<model>-<time>."
)
UNITS = {
    "collecting": "text",
    "collecting held-out": "text",
    "training": "step",
    "spliced loss": "prompt",
}


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
        from interp import saes_workflow as workflow
        from interp.saes import Normalize, SAETrainConfig

        sae_config = SAETrainConfig(
            d_sae=d_sae,
            l1_coefficient=l1_coefficient,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            normalize=check_choice(normalize, get_args(Normalize), "--normalize"),
            seed=seed,
        )
        config = workflow.SAERunConfig(
            hook=workflow.hook_name(hook, layer),
            holdout_every=holdout_every,
            skip_first=skip_first,
            sae=sae_config,
        )
        files = workflow.text_files(texts or ())
        dataset = workflow.load_texts(files)
        record.inputs(files)
        workflow.split_texts(dataset, holdout_every)  # refused before the model loads
        workflow.check_sae_fits(model, device, d_sae, batch_size)
        folder = result_folder(out, "sae-train", model, record)
        loaded = load_model_or_fail(model, device)
        with stage_bars(UNITS) as update:
            run = workflow.train_and_score(loaded, dataset, config, progress=update)
        saved = run.trained.save(folder / "sae")
        record.wrote(sorted(saved.iterdir()))
        summary = run.summary
        write_outputs(folder, record, summary=summary)
        typer.echo(
            f"{config.hook}: {d_sae} latents trained on {summary['train_tokens']} tokens of"
            f" {summary['train_texts']} texts in {summary['train_s']:.0f} s"
        )
        typer.echo(
            f"held out ({summary['heldout_texts']} texts): variance explained"
            f" {summary['variance_explained']:.3f}, L0 {summary['l0']:.1f}; next-token loss"
            f" {summary['loss_clean']:.3f} clean, {summary['loss_spliced']:.3f} spliced"
            f" ({summary['loss_increase']:+.3f} nats over {summary['predicted_tokens']} tokens)"
        )
        typer.echo(f"SAE (sae-lens format) in {saved}")


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
        from interp.saes import TrainedSAE
        from probes.sae_latents import read_latents

        if top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {top_k}.")
        if not prompt.strip():
            raise InputError("--prompt is empty.")
        trained = TrainedSAE.load(sae)
        record.inputs([sae])
        folder = result_folder(out, "sae-latents", model, record)
        loaded = load_model_or_fail(model, device)
        reading = read_latents(
            loaded, trained, prompt, top_k=top_k, latent=latent, position=position
        )
        write_outputs(
            folder, record, tables=reading.tables(), figures=reading.figures, static=static
        )
        for pos, rows in reading.latents.data.groupby("position"):
            listed = ", ".join(f"{r.latent} ({r.activation:.2f})" for r in rows.itertuples())
            typer.echo(f"{pos:4d} {rows.token.iloc[0]!r:>14}: {listed}")
        if reading.heads is not None:
            heads = reading.heads.data
            top = heads.reindex(heads.score.abs().sort_values(ascending=False).index)
            listed = ", ".join(f"{r.label} {r.score:+.2f}" for r in top.head(5).itertuples())
            typer.echo(
                f"latent {latent} at position {heads.position.iloc[0]}: pre-activation"
                f" {heads.pre_activation.iloc[0]:.2f}; heads {top.score.sum():+.2f}, top: {listed}"
            )
        typer.echo(f"tables in {folder}")
