"""Sparse autoencoders on the toolkit's hook points, trained and saved with sae-lens.

Activations come from `interp.hook_points` (TransformerLens names on the plain HF model):
`collect_tokens` keeps one [d_model] row per real token of a residual-stream-shaped point
(`blocks.{layer}.hook_resid_post`, ...), `collect_heads` one [head, d_model] block per
text, each head's output z_h·W_O,h averaged over the text's real positions (O'Neill & Bui
2024, arXiv 2405.12522, the input of SAE circuit identification). `train_sae` trains a
sae-lens `StandardTrainingSAE` with sae-lens's own `SAETrainer`, fed by an in-memory
iterator over those rows (the trainer's `DataProvider` seam; sae-lens's own activation
store only reads TransformerLens/HF models by hook name, not tensors), and returns an
inference `StandardSAE` with its provenance. `TrainedSAE.save` writes sae-lens's folder
format (`cfg.json` + `sae_weights.safetensors`, loadable with `sae_lens.SAE.load_from_disk`)
with the toolkit's `Provenance` inside the config's metadata; `TrainedSAE.load` checks it
against the model and hook it is used with.

Memory: everything is in memory. `collect_tokens` holds [tokens, d_model] float32 (135M
model: 2.3 KiB a token); `collect_heads` [texts, layers x heads, d_model] float32 and, per
batch, one [batch, pos, head, d_model] tensor of the layer being recorded.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from sae_lens import SAE, StandardSAE, StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import ConfigError, InputError, did_you_mean
from interp.heads import Head
from interp.hook_points import hooked
from interp.models import Model
from interp.results import Provenance, hash_inputs

__all__ = [
    "Activations",
    "Reconstruction",
    "SAETrainConfig",
    "TrainedSAE",
    "collect_heads",
    "collect_tokens",
    "reconstruction",
    "train_sae",
]

Progress = Callable[[int, int], None]
Reduction = Literal["tokens", "head_mean"]
TOKEN_FORMS = (
    "blocks.{layer}.hook_resid_pre",
    "blocks.{layer}.hook_resid_post",
    "blocks.{layer}.hook_attn_out",
    "blocks.{layer}.hook_mlp_out",
)
HEAD_FORM = "blocks.{layer}.attn.hook_result"
_TOKEN_NAME = re.compile(
    r"blocks\.(\d+)\.(" + "|".join(f.split(".")[-1] for f in TOKEN_FORMS) + ")"
)
_PROVENANCE_KEY = "interp_provenance"


@dataclass(frozen=True, eq=False)
class Activations:
    """Activations collected for an SAE, with the model, hook and texts they came from.

    Attributes:
        values: [token, d_model] for "tokens" (real tokens of every text, in order);
            [text, head, d_model] for "head_mean" (heads in `heads` order).
        hook: the TL name ("blocks.3.hook_resid_post"), or `HEAD_FORM` for head outputs.
        layers: the layers recorded.
        reduction: "tokens" or "head_mean" (each head's output averaged over positions).
        model: the model's spec.
        weights_hash: the model's weights fingerprint (`Model.weights_hash`).
        data_hash: `hash_inputs` of the texts.
        n_texts: how many texts.
        heads: the heads of the second axis for "head_mean"; empty for "tokens".
    """

    values: Tensor
    hook: str
    layers: tuple[int, ...]
    reduction: Reduction
    model: str
    weights_hash: str
    data_hash: str
    n_texts: int
    heads: tuple[Head, ...] = ()

    def rows(self) -> Float[Tensor, "row d_model"]:
        """The SAE's training rows: one per token, or one per (text, head)."""
        return self.values.reshape(-1, self.values.shape[-1])

    def select(self, texts: Sequence[int] | Tensor) -> Activations:
        """The "head_mean" activations of some texts; the data hash records which."""
        if self.reduction != "head_mean":
            raise InputError("select picks texts of head outputs; token rows have no text axis.")
        index = torch.as_tensor(texts, dtype=torch.long).reshape(-1)
        return replace(
            self,
            values=self.values[index],
            data_hash=hash_inputs([self.data_hash, index.tolist()]),
            n_texts=len(index),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activations):
            return NotImplemented
        mine, theirs = _fields(self), _fields(other)
        return torch.equal(mine.pop("values"), theirs.pop("values")) and mine == theirs

    __hash__ = None  # type: ignore[assignment]  # holds a mutable tensor


def _fields(acts: Activations) -> dict[str, Any]:
    """Fields of an Activations as a dict, without copying the tensor."""
    return {name: getattr(acts, name) for name in acts.__dataclass_fields__}


def _batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    if isinstance(texts, str):
        raise InputError("Give a list of texts, not one string.")
    if not texts:
        raise InputError("No texts to collect activations from: the dataset is empty.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    return [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


def _check_layer(layer: int, model: Model, what: str) -> None:
    if not 0 <= layer < model.geometry.n_layers:
        raise InputError(
            f"{what}: layer {layer} is out of range for a {model.geometry.n_layers}-layer model."
        )


def collect_tokens(
    model: Model,
    texts: Sequence[str],
    hook: str,
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Activations:
    """Record a [batch, pos, d_model] hook point on every real token of the texts.

    Args:
        model: the model.
        texts: the dataset, tokenized as `model.encode` does (left-padded batches).
        hook: a TL name of a residual-stream-shaped point (forms: `TOKEN_FORMS`).
        batch_size: texts per forward.
        progress: called with (texts done, texts in all) after each batch.

    Returns:
        Activations with values [tokens, d_model] float32 on the CPU.

    Raises:
        InputError: an unknown or wrongly shaped hook, a layer out of range, no texts.

    Example:
        >>> from tests.tiny import tiny_llama
        >>> acts = collect_tokens(tiny_llama(), ["hello", "hi"], "blocks.1.hook_resid_post")
        >>> acts.values.shape
        torch.Size([7, 64])
    """
    match = _TOKEN_NAME.fullmatch(hook)
    if match is None:
        names = [form.format(layer=0) for form in TOKEN_FORMS]
        raise InputError(
            f"No token hook point {hook!r}; forms: {', '.join(TOKEN_FORMS)}."
            + did_you_mean(hook, names)
        )
    layer = int(match.group(1))
    _check_layer(layer, model, hook)
    batches = _batches(texts, batch_size)
    chunks: list[Tensor] = []
    done = 0
    for batch in batches:
        encoding = model.encode(batch)
        real = encoding.attention_mask.bool()

        def keep(x: Tensor, real: Tensor = real) -> None:
            chunks.append(x[real].detach().to("cpu", torch.float32))  # [tokens, d_model]

        with torch.no_grad(), hooked(model.hf, {hook: keep}):
            model.hf(**encoding)
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    return Activations(
        values=torch.cat(chunks),
        hook=hook,
        layers=(layer,),
        reduction="tokens",
        model=model.spec,
        weights_hash=model.weights_hash,
        data_hash=hash_inputs(list(texts)),
        n_texts=len(texts),
    )


def collect_heads(
    model: Model,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Activations:
    """Each head's output z_h·W_O,h averaged over each text's real positions.

    This is the input of SAE circuit identification (O'Neill & Bui 2024, §3): one SAE
    shared by all heads sees one [d_model] row per (text, head). Padding is left out of the
    mean, so a text's rows do not depend on the batch it was padded in (up to float error).

    Args:
        model: the model.
        texts: the dataset.
        layers: layers whose heads to record (default: all).
        batch_size: texts per forward.
        progress: called with (texts done, texts in all) after each batch.

    Returns:
        Activations with values [texts, len(layers) x n_heads, d_model] float32 on the CPU.

    Example:
        >>> from tests.tiny import tiny_llama
        >>> acts = collect_heads(tiny_llama(), ["hello", "hi"])
        >>> acts.values.shape, acts.heads[5].label
        (torch.Size([2, 12, 64]), 'L1H1')
    """
    wanted = tuple(range(model.geometry.n_layers) if layers is None else layers)
    if not wanted:
        raise InputError("collect_heads: no layers given.")
    for layer in wanted:
        _check_layer(layer, model, "collect_heads")
    batches = _batches(texts, batch_size)
    blocks: list[Tensor] = []
    done = 0
    for batch in batches:
        blocks.append(_head_means(model, batch, wanted))
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    n_heads = model.geometry.n_heads
    return Activations(
        values=torch.cat(blocks),
        hook=HEAD_FORM,
        layers=wanted,
        reduction="head_mean",
        model=model.spec,
        weights_hash=model.weights_hash,
        data_hash=hash_inputs(list(texts)),
        n_texts=len(texts),
        heads=tuple(Head(layer, head) for layer in wanted for head in range(n_heads)),
    )


def _head_means(
    model: Model, texts: list[str], layers: tuple[int, ...]
) -> Float[Tensor, "batch layer_head d_model"]:
    """One forward: each head's output averaged over each text's real positions."""
    encoding = model.encode(texts)
    mask = encoding.attention_mask.to(torch.float32)[:, :, None, None]  # [batch, pos, 1, 1]
    means: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[[Tensor], None]:
        def fn(result: Tensor) -> None:  # [batch, pos, head, d_model], reduced here
            on = mask.to(result.device)
            summed = (result.detach().to(torch.float32) * on).sum(1)
            means[layer] = (summed / on.sum(1)).cpu()  # [batch, head, d_model]

        return fn

    fns = {HEAD_FORM.format(layer=layer): keep(layer) for layer in layers}
    with torch.no_grad(), hooked(model.hf, fns):
        model.hf(**encoding)
    return torch.cat([means[layer] for layer in layers], dim=1)


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
        seed: seeds the weight initialisation and the shuffles.
    """

    d_sae: int = 256
    l1_coefficient: float = 5.0
    lr: float = 3e-4
    batch_size: int = 4096
    epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_sae", "batch_size", "epochs"):
            check_range(self, name, 1)
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
    """A sae-lens inference SAE and the provenance of its training.

    `provenance.config` holds the hook, layers, reduction and `SAETrainConfig`;
    `provenance.inputs_hash` is the training texts' hash. Equal means same provenance,
    same sae-lens config and bit-equal weights.
    """

    sae: StandardSAE
    provenance: Provenance

    @property
    def hook(self) -> str:
        return str(self.provenance.config["hook"])

    def check(self, model: Model, hook: str | None = None) -> None:
        """InputError unless this SAE was trained on `model`'s weights (and on `hook`)."""
        trained = self.provenance
        if trained.weights_hash != model.weights_hash:
            raise InputError(
                f"This SAE was trained on {trained.model} (weights {trained.weights_hash[:19]}),"
                f" not on {model.spec} (weights {model.weights_hash[:19]}): train one on it."
            )
        if hook is not None and hook != self.hook:
            raise InputError(f"This SAE was trained on {self.hook!r}, not on {hook!r}.")

    def save(self, folder: str | Path) -> Path:
        """Write sae-lens's folder format; the provenance rides in the config's metadata."""
        folder = Path(folder)
        self.sae.save_model(folder)
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, *, model: Model | None = None, hook: str | None = None
    ) -> TrainedSAE:
        """Load a saved SAE; with `model` (and `hook`) check it was trained on them.

        Raises:
            InputError: no SAE folder there, no toolkit provenance, or another model/hook.
        """
        folder = Path(folder)
        config = folder / "cfg.json"
        if not config.is_file():
            raise InputError(f"No SAE at {folder}: expected sae-lens's cfg.json there.")
        metadata = json.loads(config.read_text()).get("metadata", {})
        if _PROVENANCE_KEY not in metadata:
            raise InputError(f"The SAE at {folder} has no interp provenance: train it with interp.")
        sae = SAE.load_from_disk(folder)
        if not isinstance(sae, StandardSAE):
            raise InputError(f"The SAE at {folder} is a {type(sae).__name__}, not a StandardSAE.")
        trained = cls(sae, Provenance.from_dict(metadata[_PROVENANCE_KEY]))
        if model is not None:
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


def train_sae(
    acts: Activations, config: SAETrainConfig | None = None, *, progress: Progress | None = None
) -> TrainedSAE:
    """Train a sae-lens standard SAE on collected activations with sae-lens's trainer.

    sae-lens's `SAETrainer.fit` draws its own tqdm bar on stderr (it takes no callback);
    `progress` gets (steps done, steps in all) from the data iterator.

    Args:
        acts: from `collect_tokens` or `collect_heads`; `acts.rows()` are the samples.
        config: training settings (default `SAETrainConfig()`).
        progress: called once per step.

    Returns:
        The trained inference SAE with its provenance.

    Example:
        >>> from tests.tiny import tiny_llama
        >>> acts = collect_tokens(tiny_llama(), ["hello world"], "blocks.1.hook_resid_post")
        >>> trained = train_sae(acts, SAETrainConfig(d_sae=32, epochs=2))  # doctest: +SKIP
        >>> trained.sae.cfg.d_sae  # doctest: +SKIP
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
            "train": config.to_dict(),
        },
        inputs_hash=acts.data_hash,
        n_inputs=acts.n_texts,
    )
    device = str(rows.device)
    sae_config = StandardTrainingSAEConfig(
        d_in=rows.shape[-1],
        d_sae=config.d_sae,
        l1_coefficient=config.l1_coefficient,
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
