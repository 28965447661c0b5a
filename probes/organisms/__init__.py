"""Model organisms: small models trained so that the analyzers have known answers to find.

They are test subjects, not analyzers: `shapes` (shapes-llava, a toy LLaVA on synthetic
scenes with exact hallucination ground truth) validates the vision probes and the image
interventions. Each registers itself with the loader by name (`interp.models._DECLARED`).
"""
