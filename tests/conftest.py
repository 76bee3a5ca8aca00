"""Shared test fixtures: the Unity-trained reference policies shipped with the tests."""
from __future__ import annotations

from pathlib import Path

import pytest

UNITY_POLICIES = Path(__file__).resolve().parent / "data" / "unity"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``tests/data/unity``: the ONNX policies ML-Agents trained in the course's Unity scenes (see its README)."""
    return UNITY_POLICIES
