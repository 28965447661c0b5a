"""Analyzers that score every attention head of a model, one module each."""
