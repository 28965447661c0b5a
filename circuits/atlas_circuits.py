"""The head atlas's circuit columns: IOI path patching per stage, the circuit, attribution.

`circuits` runs `circuits.circuit_analysis.analyse_circuit` on IOI prompts (Wang et al.
2022's p_ABC corruption; the command's defaults, `interp circuit ioi`) with attribution
patching, and gives each head of the model:

- its path-patching score in each discovery stage, named by the role the stage finds
  (`ROLES`): name movers (-> logits), S-inhibition (-> the movers' queries), induction and
  duplicate-token heads (-> the S-inhibition heads' values at S2: one stage finds both),
  previous-token heads (-> the induction heads' keys at S1+1). A stage scores only the
  heads below its receivers, and a chain that ends early skips its last stages: NaN there;
- `in_circuit`: whether discovery chose it (the union over stages, capped);
- `attribution`: its attribution-patching score (`circuits.attribution`).

The analysis records no work to resume: the atlas keeps it as one item. Quick mode reads
`QUICK_PROMPTS` prompts instead of the command's `PROMPTS`. Cost and memory: the analysis's
(four path-patching runs, mean-ablation faithfulness, one attribution forward and backward;
docs/methods.md §8), all growing with the prompts.
"""

from __future__ import annotations

from pathlib import Path

from circuits.circuit_analysis import CircuitConfig, analyse_circuit
from circuits.tasks import ioi
from interp.atlas_part import AtlasPart, AtlasSettings, method_heads, require_midway_start
from interp.models import Model
from interp.work import StageProgress

METHOD = "circuits"
PROMPTS = 16  # `interp circuit ioi --n`'s default
QUICK_PROMPTS = 4
# Each discovery stage (circuits.path_patching.IOI_STAGES) by the heads it finds.
ROLES = {
    "logits": "name_movers",
    "name_mover_queries": "s_inhibition",
    "s_inhibition_values": "induction_duplicate",
    "induction_keys": "previous_token",
}


def circuits(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Every head's IOI path-patching score per stage, circuit membership, attribution.

    `folder` is not used: the analysis has no recorded items to resume from.

    Example:
        >>> from interp.atlas_part import AtlasSettings
        >>> from interp.models import load_model
        >>> part = circuits(load_model(), AtlasSettings(quick=True), None, None)  # doctest: +SKIP
        >>> len(part.heads)  # doctest: +SKIP
        270
    """
    del folder
    require_midway_start(model)
    config = CircuitConfig(patching="attribution")
    n = QUICK_PROMPTS if settings.quick else PROMPTS
    analysis = analyse_circuit(model, ioi(model, n, seed=settings.seed), config, progress=progress)
    stages = analysis.discovery.scores.data.pivot(
        index=["layer", "head"], columns="stage", values="score"
    )
    stages = stages.reindex(columns=list(ROLES)).rename(columns=ROLES).reset_index()
    attribution = analysis.maps["attribution"].data
    columns = attribution[["layer", "head"]].assign(
        in_circuit=attribution["label"].isin(analysis.discovery.heads.labels),
        attribution=attribution["score"],
    )
    columns = stages.merge(columns, on=["layer", "head"], how="right")
    settings_used = {"task": "ioi", "n": n, "seed": settings.seed, "config": config.to_dict()}
    return AtlasPart(
        method_heads(model.geometry, METHOD, columns),
        {name: table.data for name, table in analysis.tables().items()},
        {**settings_used, "summary": analysis.summary},
    )
