"""shapes-llava: a small LLaVA that sees synthetic scenes, with exact hallucination benchmarks.

- `scenes`: the seeded scene generator (1-4 coloured shapes on 64x64 images).
- `hallucination`: CHAIR and POPE analogues with exact ground truth.
- `model`: assembles the LLaVA (`load_model("shapes-llava")`).
- `train`: trains its vision tower and projector (`python -m probes.organisms.shapes.train`).
- `evaluate`: POPE and CHAIR with the image and blank (`python -m ...shapes.evaluate`).
- `task_folders`: its held-out POPE and caption tasks as folders (`interp shapes tasks`).
"""
