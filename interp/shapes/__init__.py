"""shapes-llava: a small LLaVA that sees synthetic scenes, with exact hallucination benchmarks.

- `interp.shapes.scenes`: the seeded scene generator (1-4 coloured shapes on 64x64 images).
- `interp.shapes.hallucination`: CHAIR and POPE analogues with exact ground truth.
- `interp.shapes.model`: assembles the LLaVA (`load_model("shapes-llava")`).
- `interp.shapes.train`: trains its vision tower and projector (`python -m interp.shapes.train`).
- `interp.shapes.evaluate`: POPE and CHAIR with the image and blank (`python -m ...evaluate`).
"""
