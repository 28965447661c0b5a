"""Measurements on shapes-llava: vision heads, visual sinks, and VHR/VAR effects on POPE and CHAIR.

Run `python benchmarks/shapes_llava.py --out results/shapes` (about 30-40 min on one loaded
CPU core with the defaults). It writes, to `--out`:

- `vhd.parquet`, `image_attention.parquet` (HeadScores) and their heatmaps: VHD and the
  image-attention share of every head, on one POPE prompt per held-out scene;
- `visual_sinks.csv`: per layer, the image and text tokens with phi >= tau (every
  dimension counts: SmolLM2's sink dimensions are not published), and the top dimensions;
- `effects.csv`: VHR (alpha 2) and VAR (p 0.4) on POPE (three settings, `interp.effects`)
  and CHAIR (`interp.captions.caption_effects`), with 95% paired bootstrap intervals;
- `sweeps.csv` and `sweep_alpha.*`, `sweep_p.*`: POPE-adversarial accuracy over VHR's alpha
  and VAR's p, with intervals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.captions import caption_effects, load_caption_task
from interp.effects import EffectsConfig, measure
from interp.figure_export import export
from interp.figures import effect_sweep, head_heatmap
from interp.interventions.var import VAR, VarConfig
from interp.interventions.vhr import VHR, VhrConfig
from interp.models import Model, load_model
from interp.tasks import load_task
from probes.organisms.shapes.hallucination import SETTINGS, pope_questions
from probes.organisms.shapes.model import prompt
from probes.organisms.shapes.scenes import held_out_seeds, render, scenes
from probes.organisms.shapes.task_folders import write_task_folders
from probes.vision import image_attention, vision_head_divergence
from probes.visual_sinks import sink_dimensions, visual_sinks

ALPHAS = (0.5, 1.5, 2.0, 3.0)
PS = (0.2, 0.4, 0.6, 0.8)
SWEEP_TITLE = "shapes-llava, POPE adversarial: accuracy difference"


def heads(model: Model, n_scenes: int, out: Path) -> None:
    """VHD and image attention per head on one POPE prompt per scene; heatmaps."""
    truths = scenes(held_out_seeds(n_scenes))
    questions = pope_questions(truths, "adversarial")
    first = {q.scene: q for q in reversed(questions)}  # one question per scene
    texts = [prompt(first[i].text) for i in range(n_scenes)]
    images = [render(s) for s in truths]
    vhd = vision_head_divergence(model, texts, images)
    share = image_attention(model, texts, images)
    vhd.save(out / "vhd.parquet")
    share.save(out / "image_attention.parquet")
    figures = {
        "vhd": head_heatmap(vhd, title="VHD per head, shapes-llava"),
        "image_attention": head_heatmap(share, title="Image attention share, shapes-llava"),
    }
    export(figures, out)
    for name, table in (("VHD", vhd), ("image share", share)):
        mean = table.data.groupby("label", sort=False)["score"].mean().sort_values()
        print(f"{name}: top heads {mean.tail(8)[::-1].round(4).to_dict()}")
        by_layer = table.data.groupby("layer")["score"].mean()
        print(f"{name} by layer: {by_layer.round(4).tolist()}")
    tokens = visual_sinks(model, texts[:8], images[:8])
    data = tokens.data
    per_layer = data.groupby(["layer", "kind"])["sink"].sum().unstack(fill_value=0)
    per_layer["max_phi_image"] = data[data.kind == "image"].groupby("layer")["phi"].max()
    per_layer["max_phi_text"] = data[data.kind == "text"].groupby("layer")["phi"].max()
    per_layer.to_csv(out / "visual_sinks.csv")
    print("sinks per layer (8 prompts):")
    print(per_layer.round(1).to_string())
    print("sink dimensions:", sink_dimensions(tokens).head(5).to_dict("records"))


def effects(model: Model, n_scenes: int, out: Path) -> None:
    """VHR and VAR at their defaults on POPE and CHAIR, then the alpha and p sweeps."""
    config = EffectsConfig()
    with tempfile.TemporaryDirectory() as tmp:
        *pope, captions = write_task_folders(tmp, n_scenes)
        tasks = [load_task(folder) for folder in pope]
        caption_task = load_caption_task(captions)
        rows = []
        for name, intervention in (("VHR", VHR()), ("VAR", VAR())):
            table = measure(model, tasks, intervention, config).table.data
            rows.append(table.assign(intervention=name, benchmark="pope"))
            chair = caption_effects(model, [caption_task], intervention, config).table.data
            rows.append(chair.assign(intervention=name, benchmark="chair"))
            print(name, "done", flush=True)
        table = pd.concat(rows, ignore_index=True)
        table.to_csv(out / "effects.csv", index=False)
        columns = ["intervention", "task", "metric", "n", "baseline", "intervened"]
        columns += ["difference", "ci_low", "ci_high"]
        print(table[columns].round(4).to_string(index=False))
        adversarial = tasks[SETTINGS.index("adversarial")]
        sweep = []
        for alpha in ALPHAS:
            intervention = VHR(VhrConfig(alpha=alpha))
            row = measure(model, [adversarial], intervention, config).table.data.iloc[0]
            sweep.append({"intervention": "VHR", "parameter": alpha, **row.to_dict()})
        for p in PS:
            intervention = VAR(VarConfig(p=p))
            row = measure(model, [adversarial], intervention, config).table.data.iloc[0]
            sweep.append({"intervention": "VAR", "parameter": p, **row.to_dict()})
    sweeps = pd.DataFrame(sweep)
    sweeps.to_csv(out / "sweeps.csv", index=False)
    print(sweeps[["intervention", "parameter", "intervened", "ci_low", "ci_high"]].round(4))
    figures = {
        "sweep_alpha": effect_sweep(sweeps[sweeps.intervention == "VHR"], "VHR alpha", SWEEP_TITLE),
        "sweep_p": effect_sweep(sweeps[sweeps.intervention == "VAR"], "VAR p", SWEEP_TITLE),
    }
    export(figures, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/shapes"))
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes for effects")
    parser.add_argument("--head-scenes", type=int, default=32, help="prompts for head maps")
    parser.add_argument("--skip-effects", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model("shapes-llava")
    start = time.time()
    heads(model, args.head_scenes, args.out)
    print(f"heads: {time.time() - start:.0f} s", flush=True)
    if not args.skip_effects:
        effects(model, args.scenes, args.out)
        print(f"total: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
