"""Sparse autoencoders on the toolkit's activations, trained and saved with sae-lens.

`train_sae` trains a sae-lens `StandardTrainingSAE` with sae-lens's own `SAETrainer` on
`interp.activations.Activations`, fed by an in-memory iterator over their rows (the
trainer's `DataProvider` seam: sae-lens's own activation store only reads
TransformerLens/HF models by hook name, not tensors), and returns the inference
`StandardSAE` with its provenance. `TrainedSAE.save` writes sae-lens's folder format
(`cfg.json` + `sae_weights.safetensors`, loadable with `sae_lens.SAE.load_from_disk`) with
the toolkit's `Provenance` inside the config's metadata; `TrainedSAE.load` reads any SAE in
that format (one saved by plain sae-lens has no provenance and is checked by its input width
at its hook) and checks it against the model and hook it is used with (docs/methods.md
§11). `reconstruction` scores an SAE on activations; `splice_loss` measures the model's
next-token loss with the SAE's reconstruction in place of the activation.

Memory: the rows stay where they are (one shuffled index per epoch; `constant_norm_rescale`
keeps one normalised copy); the SAE holds 2·d_in·d_sae weights, and Adam twice that again.
`splice_loss` holds one [batch, pos, vocab] float32 logits tensor per forward (4 texts of
200 tokens with a 49k vocabulary: 160 MB), so lower its batch size for long texts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from sae_lens import SAE, StandardSAE, StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor

from interp.activations import Activations, _batches
from interp.config import Config, check_range
from interp.errors import InputError
from interp.hook_points import hooked, record
from interp.models import Model
from interp.results import Provenance

__all__ = [
    "Reconstruction",
    "SAETrainConfig",
    "SpliceLoss",
    "TrainedSAE",
    "hook_width",
    "reconstruction",
    "splice_loss",
    "train_sae",
]

Progress = Callable[[int, int], None]
_PROVENANCE_KEY = "interp_provenance"
Normalize = Literal["none", "constant_norm_rescale"]


@dataclass(frozen=True, kw_only=True)
class SAETrainConfig(Config):
    """Training settings for a sae-lens standard (ReLU, L1) SAE.

    Attributes:
        d_sae: number of latents.
        l1_coefficient: weight of the decoder-norm-weighted L1 penalty (sae-lens's
            `StandardTrainingSAEConfig`; 5.0 is its tutorials' value).
        lr: Adam learning rate (sae-lens's default 3e-4), constant.
        batch_size: rows per step; a dataset smaller than this trains full-batch.
        epochs: passes over the rows, reshuffled each epoch (a partial last batch is
            dropped, as sae-lens counts every step as a full batch).
        normalize: "none" (sae-lens's default), or "constant_norm_rescale": every row is
            scaled to norm sqrt(d_in) before training, so each token weighs the same in the
            squared error instead of the few massive-norm ones dominating it, and the SAE
            keeps sae-lens's `constant_norm_rescale`, which scales its input so at inference
            and undoes it on the reconstruction.
        seed: seeds the weight initialisation and the shuffles.
    """

    d_sae: int = 256
    l1_coefficient: float = 5.0
    lr: float = 3e-4
    batch_size: int = 4096
    epochs: int = 1
    normalize: Normalize = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_sae", "batch_size", "epochs"):
            check_range(self, name, 1)
        check_range(self, "seed", 0)
        check_range(self, "l1_coefficient", 0)
        check_range(self, "lr", 0, strict_low=True)


@dataclass
class _Rows(Iterator[Tensor]):
    """sae-lens `DataProvider` over in-memory rows: shuffled batches, epoch after epoch."""

    rows: Tensor
    batch_size: int
    n_steps: int
    generator: torch.Generator
    progress: Progress | None = None
    step: int = 0
    order: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __next__(self) -> Tensor:
        per_epoch = len(self.rows) // self.batch_size
        start = (self.step % per_epoch) * self.batch_size
        if start == 0:
            self.order = torch.randperm(len(self.rows), generator=self.generator)
        self.step += 1
        if self.progress is not None:
            self.progress(min(self.step, self.n_steps), self.n_steps)
        return self.rows[self.order[start : start + self.batch_size]]


@dataclass(frozen=True, eq=False)
class TrainedSAE:
    """A sae-lens inference SAE and, when the toolkit trained it, the provenance of that.

    `provenance.config` holds the hook, layers, reduction and `SAETrainConfig`;
    `provenance.inputs_hash` is the training texts' hash. An SAE saved by plain sae-lens
    has no provenance (None): its hook comes from sae-lens's own metadata, it is taken to
    read one activation per token, and `check` can then test only that its input width
    fits the model's activation at that hook, not that it was trained on these weights.
    Equal means same provenance, same sae-lens config and bit-equal weights.
    """

    sae: SAE
    provenance: Provenance | None

    @property
    def hook(self) -> str:
        if self.provenance is None:
            return str(self.sae.cfg.metadata.hook_name)
        return str(self.provenance.config["hook"])

    @property
    def reduction(self) -> str:
        """ "tokens" (one row per token) or "heads" (one per head), as collected for training."""
        return "tokens" if self.provenance is None else str(self.provenance.config["reduction"])

    def check(self, model: Model | None = None, hook: str | None = None) -> None:
        """InputError unless this SAE fits `model` and `hook`.

        With provenance: trained on `model`'s weights and on `hook`. Without: its input
        width equals the width of `model`'s activation at its hook (one short forward).
        """
        if hook is not None and hook != self.hook:
            raise InputError(f"This SAE reads {self.hook!r}, not {hook!r}.")
        if model is None:
            return
        trained = self.provenance
        if trained is None:
            width = hook_width(model, self.hook)
            if width != self.sae.cfg.d_in:
                raise InputError(
                    f"This SAE reads {self.sae.cfg.d_in}-wide activations at {self.hook!r},"
                    f" where {model.spec} has {width}: it was made for another model."
                )
        elif trained.weights_hash != model.weights_hash:
            raise InputError(
                f"This SAE was trained on {trained.model} (weights {trained.weights_hash[:19]}),"
                f" not on {model.spec} (weights {model.weights_hash[:19]}): train one on it."
            )

    def save(self, folder: str | Path) -> Path:
        """Write sae-lens's folder format; the provenance rides in the config's metadata."""
        folder = Path(folder)
        self.sae.save_model(folder)
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, *, model: Model | None = None, hook: str | None = None
    ) -> TrainedSAE:
        """Load an SAE in sae-lens's folder format, the toolkit's or any other.

        With `model` (and `hook`), `check` it against them.

        Raises:
            InputError: no readable SAE folder there, or one that does not fit model/hook.
        """
        folder = Path(folder)
        metadata = _metadata(folder / "cfg.json")
        provenance = None
        if _PROVENANCE_KEY in metadata:
            try:
                provenance = Provenance.from_dict(metadata[_PROVENANCE_KEY])
            except (TypeError, ValueError) as exc:
                raise InputError(f"The SAE at {folder} has a malformed interp provenance.") from exc
        elif not metadata.get("hook_name"):
            raise InputError(
                f"The SAE at {folder} names no hook point (sae-lens's metadata.hook_name):"
                " set it to the TransformerLens name it reads, e.g. blocks.3.hook_resid_post."
            )
        weights = folder / "sae_weights.safetensors"
        if not weights.is_file():
            raise InputError(f"No SAE weights at {weights}.")
        try:
            sae = SAE.load_from_disk(folder)
        except Exception as exc:  # sae-lens and safetensors raise many kinds; say which
            raise InputError(
                f"sae-lens cannot load the SAE at {folder}: {type(exc).__name__}:"
                f" {str(exc).splitlines()[0] if str(exc) else 'no message'}"
            ) from exc
        trained = cls(sae, provenance)
        trained.check(model, hook)
        return trained

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainedSAE):
            return NotImplemented
        mine, theirs = self.sae.state_dict(), other.sae.state_dict()
        return (
            self.provenance == other.provenance
            and self.sae.cfg.to_dict() == other.sae.cfg.to_dict()
            and mine.keys() == theirs.keys()
            and all(torch.equal(mine[key], theirs[key]) for key in mine)
        )

    __hash__ = None  # type: ignore[assignment]


def _metadata(config: Path) -> dict:
    """The `metadata` of a sae-lens cfg.json, after checking the file is one."""
    if not config.is_file():
        raise InputError(f"No SAE at {config.parent}: expected sae-lens's cfg.json there.")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{config} is not UTF-8 text.") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{config} is not valid JSON: {exc.msg} (line {exc.lineno}).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("metadata", {}), dict):
        raise InputError(f"{config} is not a sae-lens config: expected an object with metadata.")
    return data.get("metadata", {})


def hook_width(model: Model, hook: str) -> int:
    """The width of one token's activation at a TransformerLens hook point (heads flattened)."""
    ids = model.encode("a").input_ids
    return math.prod(record(model, ids, [hook])[hook].shape[2:])


def train_sae(
    acts: Activations, config: SAETrainConfig | None = None, *, progress: Progress | None = None
) -> TrainedSAE:
    """Train a sae-lens standard SAE on collected activations with sae-lens's trainer.

    sae-lens's `SAETrainer.fit` draws its own tqdm bar on stderr (it takes no callback);
    `progress` gets (steps done, steps in all) from the data iterator.

    Args:
        acts: from `interp.activations` (`collect_tokens`, `collect_heads`); `acts.rows()`
            are the samples.
        config: training settings (default `SAETrainConfig()`).
        progress: called once per step.

    Returns:
        The trained inference SAE with its provenance.

    Example:
        >>> from interp.activations import collect_tokens
        >>> from interp.tiny_models import tiny_llama
        >>> acts = collect_tokens(tiny_llama(), ["hello world"], "blocks.1.hook_resid_post")
        >>> trained = train_sae(acts, SAETrainConfig(d_sae=32, epochs=2))
        >>> trained.sae.cfg.d_sae
        32
    """
    config = config or SAETrainConfig()
    rows = acts.rows()
    if len(rows) == 0:
        raise InputError("No activation rows to train on: the dataset is empty.")
    batch_size = min(config.batch_size, len(rows))
    n_steps = config.epochs * (len(rows) // batch_size)
    provenance = Provenance(
        model=acts.model,
        weights_hash=acts.weights_hash,
        analyzer="interp.saes.train_sae",
        config={
            "hook": acts.hook,
            "layers": list(acts.layers),
            "reduction": acts.reduction,
            "skip_first": acts.skip_first,
            "train": config.to_dict(),
        },
        inputs_hash=acts.data_hash,
        n_inputs=acts.n_texts,
    )
    device = str(rows.device)
    if config.normalize == "constant_norm_rescale":
        # sae-lens's constant_norm_rescale measures the error after undoing the scaling;
        # rows scaled beforehand have norm sqrt(d_in), so the error is measured scaled.
        rows = rows * (rows.shape[-1] ** 0.5 / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    sae_config = StandardTrainingSAEConfig(
        d_in=rows.shape[-1],
        d_sae=config.d_sae,
        l1_coefficient=config.l1_coefficient,
        normalize_activations=config.normalize,
        device=device,
    )
    sae_config.metadata.model_name = acts.model
    sae_config.metadata.hook_name = acts.hook
    sae_config.metadata[_PROVENANCE_KEY] = provenance.to_dict()
    trainer_config = SAETrainerConfig(
        total_training_samples=n_steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=config.lr,
        lr_end=config.lr,  # the trainer asserts it is set; a constant schedule ignores it
        device=device,
    )
    generator = torch.Generator().manual_seed(config.seed)
    data = _Rows(rows, batch_size, n_steps, generator, progress)
    # Seeded, without touching the caller's RNG (building the inference SAE draws too).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        training = StandardTrainingSAE(sae_config)
        SAETrainer(cfg=trainer_config, sae=training, data_provider=data).fit()
        sae = _inference(training)
    return TrainedSAE(sae, provenance)


def _inference(training: StandardTrainingSAE) -> StandardSAE:
    """The inference SAE with the trained weights (what sae-lens saves for inference)."""
    sae = SAE.from_dict(training.cfg.get_inference_sae_cfg_dict())
    assert isinstance(sae, StandardSAE), type(sae)
    sae.load_state_dict(training.state_dict())
    return sae.eval()


@dataclass(frozen=True)
class Reconstruction:
    """How well an SAE reconstructs activations.

    Attributes:
        mse: mean over rows of the summed squared error (sae-lens's training MSE).
        variance_explained: 1 - summed squared error / summed squared deviation from the mean.
        l0: mean number of active latents per row.
    """

    mse: float
    variance_explained: float
    l0: float


def reconstruction(sae: SAE, acts: Activations) -> Reconstruction:
    """Score an SAE's reconstruction of collected activations (no gradients)."""
    rows = acts.rows().to(sae.device, sae.dtype)
    with torch.no_grad():
        latents = sae.encode(rows)
        error = (sae.decode(latents) - rows).pow(2).sum(-1)  # [row]
        spread = (rows - rows.mean(0)).pow(2).sum()
    return Reconstruction(
        mse=float(error.mean()),
        variance_explained=float(1 - error.sum() / spread) if spread > 0 else math.nan,
        l0=float((latents > 0).sum(-1).float().mean()),
    )


@dataclass(frozen=True)
class SpliceLoss:
    """A model's next-token loss on texts, clean and with an SAE's reconstruction spliced in.

    Attributes:
        clean: mean cross-entropy (nats) over every predicted token of the texts.
        spliced: the same with the hook's activation replaced by the SAE's reconstruction.
        n_tokens: predicted tokens (each text's length minus one).
    """

    clean: float
    spliced: float
    n_tokens: int

    @property
    def increase(self) -> float:
        """spliced - clean: what the reconstruction error costs the model, in nats."""
        return self.spliced - self.clean


def splice_loss(
    model: Model,
    trained: TrainedSAE,
    texts: list[str],
    *,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> SpliceLoss:
    """Next-token loss clean and with the SAE's reconstruction spliced in at its hook.

    Every real position is replaced by its reconstruction, except the first of each text
    when the SAE was trained without it (`collect_tokens(skip_first=True)`): those keep
    their clean activation, and the loss still counts every predicted token.

    Raises:
        InputError: an SAE of another model, one on head outputs, or no texts.
    """
    trained.check(model)
    if trained.reduction != "tokens":
        raise InputError("splice_loss needs an SAE on a token hook point, not on head outputs.")
    skip_first = trained.provenance is not None and bool(
        trained.provenance.config.get("skip_first", False)
    )
    batches = _batches(texts, batch_size)
    totals = torch.zeros(2, dtype=torch.float64)
    n_tokens, done = 0, 0
    for batch in batches:
        encoding = model.encode(batch)
        real = encoding.attention_mask.bool()
        spliced = real & (encoding.position_ids > 0) if skip_first else real

        def splice(x: Tensor, at: Tensor = spliced) -> Tensor:
            sae = trained.sae
            with torch.no_grad():
                rebuilt = sae.decode(sae.encode(x.to(sae.device, sae.dtype)))
            return torch.where(at[..., None], rebuilt.to(x.device, x.dtype), x)

        for column, fns in enumerate(({}, {trained.hook: splice})):
            with torch.no_grad(), hooked(model.hf, fns):
                logits = model.hf(**encoding, use_cache=False).logits  # [batch, pos, vocab]
            targets = real[:, :-1] & real[:, 1:]  # [batch, pos - 1]
            totals[column] += (
                torch.nn.functional.cross_entropy(
                    logits[:, :-1][targets].float(),
                    encoding.input_ids[:, 1:][targets],
                    reduction="sum",
                )
                .double()
                .cpu()
            )
        n_tokens += int((real[:, :-1] & real[:, 1:]).sum())
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    if n_tokens == 0:
        raise InputError("No token to predict: every text is a single token.")
    clean, spliced_loss = (totals / n_tokens).tolist()
    return SpliceLoss(clean=clean, spliced=spliced_loss, n_tokens=n_tokens)
