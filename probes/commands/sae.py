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
from typing import Annotated

import typer

from interp.cli.common import stage_bars
from interp.cli.options import Fields, Run, command
from interp.saes import SAETrainConfig

UNITS = {
    "collecting": "text",
    "collecting held-out": "text",
    "training": "step",
    "spliced loss": "prompt",
}
# The command's own training defaults (not sae-lens's): a small SAE on the shipped prose.
TRAINING = Fields(
    defaults={
        "d_sae": 1024,
        "l1_coefficient": 0.5,
        "lr": 1e-3,
        "epochs": 40,
        "batch_size": 256,
        "normalize": "constant_norm_rescale",
    }
)
Hook = typer.Option(
    help="Hook point: hook_resid_post, hook_resid_pre, hook_attn_out or hook_mlp_out (with"
    " --layer), or a full name such as blocks.3.hook_resid_post."
)
Texts = typer.Option(
    help="Text files (.txt: blank-line separated; .jsonl: a 'text' field per line); repeat"
    " for several. Default: the paragraphs of the shipped data/haystacks."
)
Holdout = typer.Option(help="Every N-th text is held out to score the SAE, not trained on.")
SkipFirst = typer.Option(
    help="Leave each text's first token (the attention sink) out of training and"
    " unreconstructed in the spliced loss."
)


@command("sae train", folder="sae-train", figures=False)
def sae_train(
    run: Run,
    config: Annotated[SAETrainConfig, TRAINING],
    layer: Annotated[int | None, typer.Option(help="Layer of the hook point (0-based).")] = None,
    hook: Annotated[str, Hook] = "hook_resid_post",
    texts: Annotated[list[Path] | None, Texts] = None,
    holdout_every: Annotated[int, Holdout] = 8,
    skip_first: Annotated[bool, SkipFirst] = False,
) -> None:
    """Train a residual-stream SAE with sae-lens and score its reconstruction.

    Reports variance explained and L0 on the held-out texts, and the model's next-token
    loss on them clean and with the reconstruction spliced in.
    """
    from interp import saes_workflow as workflow

    hook = workflow.hook_name(hook, layer)
    settings = workflow.SAERunConfig(
        hook=hook, holdout_every=holdout_every, skip_first=skip_first, sae=config
    )
    files = workflow.text_files(texts or ())
    dataset = workflow.load_texts(files)
    run.record.inputs(files)
    workflow.split_texts(dataset, holdout_every)  # refused before the model loads
    workflow.check_sae_fits(run.model_spec, run.device, config.d_sae, config.batch_size)
    folder = run.folder()
    model = run.load_model()
    with stage_bars(UNITS) as update:
        trained = workflow.train_and_score(model, dataset, settings, progress=update)
    saved = trained.trained.save(folder / "sae")
    run.record.wrote(sorted(saved.iterdir()))
    run.write(summary=trained.summary)
    run.report([*trained.summary_lines(), f"SAE (sae-lens format) in {saved}"])


@command("sae latents", folder="sae-latents")
def sae_latents(
    run: Run,
    sae: Annotated[
        Path,
        typer.Option(help="An SAE folder in sae-lens's format: `interp sae train`'s sae/, or any."),
    ],
    prompt: Annotated[str, typer.Option(help="The text to read the latents of.")],
    top_k: Annotated[int, typer.Option(help="Latents kept per token.")] = 5,
    latent: Annotated[
        int | None, typer.Option(help="Also attribute this latent to the heads that write it.")
    ] = None,
    position: Annotated[
        int, typer.Option(help="Token position of the attribution (negative: from the end).")
    ] = -1,
) -> None:
    """Each token's top SAE latents; with --latent, each head's direct contribution to it."""
    from interp.errors import InputError
    from interp.saes import TrainedSAE
    from probes.sae_latents import read_latents

    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}.")
    if not prompt.strip():
        raise InputError("--prompt is empty.")
    trained = TrainedSAE.load(sae)
    run.record.inputs([sae])
    run.folder()
    model = run.load_model()
    reading = read_latents(model, trained, prompt, top_k=top_k, latent=latent, position=position)
    run.write(tables=reading.tables(), figures=reading.figures)
    run.report(reading.summary_lines())
