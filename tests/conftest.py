"""Shared fixtures: a seeded tiny GQA Llama for unit tests, the default model for integration."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from interp.models import Model, load_model
from tests.tiny import tiny_llama


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> Model:
    return tiny_llama()


@pytest.fixture(scope="session")
def default_model() -> Model:
    """SmolLM2-135M-Instruct, loaded offline once per test session."""
    return load_model()
