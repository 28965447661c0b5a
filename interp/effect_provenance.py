"""What a measurement of effects records: the interventions measured and the inputs, pixels
included, so a result names exactly what produced it (and a resumed run checks it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.results import Provenance, hash_inputs, sha256_file

if TYPE_CHECKING:
    from interp.interventions.base import Intervention
    from interp.models import Model


def arms_provenance(
    model: Model,
    analyzer: str,
    intervention: Intervention | Sequence[Intervention],
    config: dict[str, Any],
    inputs: object,
    n_inputs: int,
) -> tuple[list[Intervention], Provenance]:
    """The arms of `intervention` (one, or a sweep's list) and the provenance of measuring
    them on `inputs` (hashed) under `config`, which gains the interventions' record."""
    arms = list(intervention) if isinstance(intervention, list | tuple) else [intervention]
    record = arms[0].to_dict() if len(arms) == 1 else [a.to_dict() for a in arms]
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=analyzer,
        config={**config, "intervention": record},
        inputs_hash=hash_inputs(inputs),
        n_inputs=n_inputs,
    )
    return arms, provenance


def image_digests(paths: Iterable[str]) -> dict[str, str]:
    """SHA-256 of each image file a task's items name, so provenance follows the pixels."""
    return {path: sha256_file(Path(path)) for path in sorted(set(paths))}
