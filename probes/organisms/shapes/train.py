"""Train shapes-llava's vision tower and projector: `python -m probes.organisms.shapes.train`.

The language model (SmolLM2-135M-Instruct) stays frozen; only the CLIP tower and the
projector (1.1M parameters) learn, in three phases on scenes from the "train" seed range:

1. Alignment, no language model: each of an image's 16 projected patch tokens is regressed
   (mean squared error) onto the LM's input embedding of the words of the object covering
   that patch, E(" colour") + E(" shape") weighted by the share of the patch it covers, and
   E(" empty") for the rest. Cheap (the tower is tiny), so it runs thousands of images.
2. End to end: teacher-forced conversations through the frozen LM, cross-entropy on the
   assistant's tokens only. Each conversation opens with the image and either the caption
   request (`caption_share` of them) or a POPE-style question, then `follow_ups` more
   questions; answers are balanced yes/no, negatives drawn uniformly, by frequency, or as
   the partner of a present object. Gradients reach the image tokens through the LM; its
   weights get none. The LM runs under bfloat16 autocast (2.2x faster than float32 on a
   CPU with AVX512-BF16).
3. Questions: the same with larger batches, mostly questions (`question_caption_share`),
   and a fresh optimizer. The frozen 135M LM cannot answer "is X in this list" even from
   text (AUC 0.5-0.63, docs/methods.md §12): the image tokens have to carry the answer in a
   form its frozen heads turn into " Yes" or " No", which takes far more question steps
   than captions do (phase 2 alone leaves POPE at chance).

In every phase a throwaway linear head on the flattened image tokens also learns which of
the 12 objects are present (binary cross-entropy, weight `recognition_weight`): without it
the image tokens carried the objects poorly (a linear probe read presence at 89% per
object, barely above always-absent's 79%), which capped POPE near 75%. The head is not
part of the model.

Fixed seed; one CPU thread by default, which makes a run deterministic (a rerun writes the
same bytes). Writes `tower.safetensors` and `train_log.jsonl` (one JSON object per logged
step) to `--out` (default data/shapes/). Time and outcome of the shipped run:
data/shapes/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from interp.models import Model, load_model
from probes.organisms.shapes.model import (
    ANSWERS,
    CAPTION_QUESTION,
    PATCH,
    WEIGHTS,
    assemble,
    follow_up,
    init_tower,
    prompt,
    tower_state,
)
from probes.organisms.shapes.scenes import (
    IMAGE_SIZE,
    OBJECTS,
    PARTNER,
    SEEDS,
    WEIGHTS_BY_OBJECT,
    Scene,
    make_scene,
    object_masks,
    render,
)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The recipe. Defaults are the shipped run's."""

    seed: int = 0
    threads: int = 1
    align_steps: int = 1000
    align_batch: int = 64
    align_lr: float = 2e-3
    steps: int = 500
    batch: int = 8
    lr: float = 1e-3
    caption_share: float = 0.5
    question_steps: int = 1200
    question_batch: int = 16
    question_caption_share: float = 0.25
    recognition_weight: float = 1.0
    follow_ups: int = 1
    log_every: int = 10


def pixels(images: list, mean: Tensor, std: Tensor) -> Tensor:
    """[batch, 3, 64, 64] normalised pixels, as the CLIP image processor makes them at 64x64."""
    array = np.stack([np.asarray(image, np.float32) / 255.0 for image in images])
    return (torch.from_numpy(array).permute(0, 3, 1, 2) - mean[:, None, None]) / std[:, None, None]


def patch_targets(scene: Scene, words: dict[str, Tensor], empty: Tensor) -> Tensor:
    """[16, d_model] alignment targets: per patch, object word embeddings by covered share."""
    grid = IMAGE_SIZE // PATCH
    masks = object_masks(scene).reshape(len(scene.objects), grid, PATCH, grid, PATCH)
    share = torch.from_numpy(masks.mean((2, 4)).reshape(len(scene.objects), grid * grid))
    share = share.float()
    target = (1 - share.sum(0))[:, None] * empty
    for index, obj in enumerate(scene.objects):
        target = target + share[index][:, None] * (words[obj.colour] + words[obj.shape])
    return target


def conversation(
    scene: Scene, rng: np.random.Generator, caption_share: float, follow_ups: int
) -> list[tuple[str, bool]]:
    """(text, is_target) segments of one training conversation about a scene."""
    questions = _questions(scene, rng, 1 + follow_ups)
    turns: list[tuple[str, str]] = [(q, ANSWERS[a]) for q, a in questions]
    if rng.random() < caption_share:
        turns[0] = (CAPTION_QUESTION, scene.caption())
    segments = []
    for index, (question, answer) in enumerate(turns):
        opening = prompt(question) if index == 0 else follow_up(question)
        segments += [(opening, False), (answer + "<|im_end|>", True), ("\n", False)]
    return segments


def _questions(scene: Scene, rng: np.random.Generator, n: int) -> list[tuple[str, bool]]:
    """`n` questions, each yes or no with equal odds; negatives uniform, popular or partner."""
    present = [o.name for o in scene.objects]
    absent = [o for o in OBJECTS if o not in present]
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            name, answer = present[int(rng.integers(len(present)))], True
        else:
            kind = rng.integers(3)
            partners = [PARTNER[p] for p in present if PARTNER[p] in absent]
            if kind == 2 and partners:
                name = partners[int(rng.integers(len(partners)))]
            else:
                weights = np.array(
                    [WEIGHTS_BY_OBJECT[OBJECTS.index(o)] if kind else 1.0 for o in absent]
                )
                name = absent[int(rng.choice(len(absent), p=weights / weights.sum()))]
            answer = False
        out.append((f"Is there a {name} in the image?", answer))
    return out


def _tokenize(model: Model, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Ids with the image placeholder expanded to its 16 tokens, and which ids are targets."""
    image_id = model.hf.config.image_token_id
    ids: list[int] = []
    target: list[bool] = []
    for text, is_target in segments:
        for token in model.tokenizer(text)["input_ids"]:
            copies = model.hf.config.image_seq_length if token == image_id else 1
            ids += [token] * copies
            target += [is_target] * copies
    return ids, target


def _batch(model: Model, convs: list[list[tuple[str, bool]]]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ids, attention mask, and labels (-100 off target) for next-token loss."""
    rows = [_tokenize(model, c) for c in convs]
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), model.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (row_ids, target) in enumerate(rows):
        ids[row, : len(row_ids)] = torch.tensor(row_ids)
        mask[row, : len(row_ids)] = 1
        labels[row, : len(row_ids)] = torch.where(torch.tensor(target), torch.tensor(row_ids), -100)
    return ids, mask, labels


def _scene_stream(seed: int) -> Callable[[int], list[Scene]]:
    rng = np.random.default_rng(seed)
    train = SEEDS["train"]
    return lambda n: [make_scene(int(s)) for s in rng.integers(train.start, train.stop, size=n)]


def train(config: TrainConfig, log: Callable[[dict], None]) -> dict[str, Tensor]:
    """Run the three phases; return the tower and projector state dict."""
    torch.set_num_threads(config.threads)
    lm = load_model()
    embed = lm.hf.get_input_embeddings().weight.detach()
    words = {w: embed[lm.tokenizer(" " + w)["input_ids"][0]] for o in OBJECTS for w in o.split()}
    empty = embed[lm.tokenizer(" empty")["input_ids"][0]]
    model = assemble(lm, init_tower(lm, config.seed))
    hf = model.hf
    for name, param in hf.named_parameters():
        param.requires_grad_(
            name.startswith(("model.vision_tower.", "model.multi_modal_projector."))
        )
    trainable = [p for p in hf.parameters() if p.requires_grad]
    torch.manual_seed(config.seed)
    head = torch.nn.Linear(hf.config.image_seq_length * embed.shape[1], len(OBJECTS))
    learned = trainable + list(head.parameters())
    processor = model.processor.image_processor
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    draw = _scene_stream(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    hf.train()
    start = time.time()

    def recognition(batch: list[Scene], images: Tensor) -> tuple[Tensor, Tensor, float]:
        """Image tokens, and the presence loss and accuracy of the throwaway linear head."""
        features = torch.stack(hf.model.get_image_features(pixel_values=images).pooler_output)
        present = torch.tensor([[o in s.names for o in OBJECTS] for s in batch]).float()
        logits = head(features.flatten(1))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, present)
        accuracy = ((logits > 0) == present.bool()).float().mean().item()
        return features, config.recognition_weight * loss, accuracy

    optimizer = torch.optim.AdamW(learned, lr=config.align_lr, weight_decay=0.0)
    scale = embed.pow(2).sum(-1).mean()
    for step in range(config.align_steps):
        _set_lr(optimizer, config.align_lr, step, config.align_steps)
        batch = draw(config.align_batch)
        features, presence, seen = recognition(batch, pixels([render(s) for s in batch], mean, std))
        target = torch.stack([patch_targets(s, words, empty) for s in batch])
        align = (features - target).pow(2).sum(-1).mean() / scale
        optimizer.zero_grad()
        (align + presence).backward()
        optimizer.step()
        if step % (config.log_every * 10) == 0 or step == config.align_steps - 1:
            log(
                {
                    "phase": "align",
                    "step": step,
                    "loss": align.item(),
                    "presence_loss": presence.item(),
                    "presence_accuracy": seen,
                    "seconds": time.time() - start,
                }
            )

    answers = tuple(lm.tokenizer(ANSWERS[a])["input_ids"][0] for a in (True, False))
    phases = [
        ("end_to_end", config.steps, config.batch, config.caption_share),
        ("questions", config.question_steps, config.question_batch, config.question_caption_share),
    ]
    for phase, steps, size, caption_share in phases:
        optimizer = torch.optim.AdamW(learned, lr=config.lr, weight_decay=0.0)
        for step in range(steps):
            _set_lr(optimizer, config.lr, step, steps)
            batch = draw(size)
            convs = [conversation(s, rng, caption_share, config.follow_ups) for s in batch]
            images = pixels([render(s) for s in batch], mean, std)
            loss, correct = _step(model, convs, images, answers)
            _, presence, seen = recognition(batch, images)
            optimizer.zero_grad()
            (loss + presence).backward()
            torch.nn.utils.clip_grad_norm_(learned, 1.0)
            optimizer.step()
            if step % config.log_every == 0 or step == steps - 1:
                log(
                    {
                        "phase": phase,
                        "step": step,
                        "loss": loss.item(),
                        "yes_no_accuracy": correct,
                        "presence_loss": presence.item(),
                        "presence_accuracy": seen,
                        "seconds": time.time() - start,
                    }
                )
    hf.eval()
    return tower_state(hf)


def _step(
    model: Model, convs: list[list[tuple[str, bool]]], images: Tensor, answers: tuple[int, int]
) -> tuple[Tensor, float]:
    """Teacher-forced loss on the assistant tokens, and the yes/no accuracy of the batch."""
    ids, mask, labels = _batch(model, convs)
    # bfloat16 matmuls in the frozen LM (about 2x faster on CPUs with AVX512-BF16);
    # the shipped model runs in float32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.hf.model(
            input_ids=ids, attention_mask=mask, pixel_values=images, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:] != -100  # position p predicts token p + 1
        logits = model.hf.get_output_embeddings()(hidden[:, :-1][targets]).float()
    wanted = labels[:, 1:][targets]
    yes_no = (wanted == answers[0]) | (wanted == answers[1])  # each question's answer token
    correct = (logits[yes_no].argmax(-1) == wanted[yes_no]).float().mean().item()
    return torch.nn.functional.cross_entropy(logits, wanted), correct


def _set_lr(optimizer: torch.optim.Optimizer, peak: float, step: int, total: int) -> None:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak."""
    warm = max(1, total // 20)
    factor = (
        (step + 1) / warm
        if step < warm
        else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    )
    for group in optimizer.param_groups:
        group["lr"] = peak * factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS.parent)
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k != "out"})
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "train_log.jsonl"
    with log_path.open("w") as handle:
        handle.write(json.dumps({"config": asdict(config)}) + "\n")

        def log(record: dict) -> None:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            print(record, flush=True)

        state = train(config, log)
    save_file(state, args.out / WEIGHTS.name)


if __name__ == "__main__":
    main()
