"""Shared test fixtures: the Unity-trained reference policies shipped with the tests, and a private compile cache."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from rlrobot.host_devices import tune_cpu_compiler

# Programs compiled as rlrobot-learn compiles them (the flags must be set before a test starts JAX's backend).
tune_cpu_compiler()
# The compilation cache of this test session (and of the processes it starts), not the user's.
os.environ.setdefault("RLROBOT_CACHE_DIR", tempfile.mkdtemp(prefix="rlrobot-test-cache-"))

UNITY_POLICIES = Path(__file__).resolve().parent / "data" / "unity"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``tests/data/unity``: the ONNX policies ML-Agents trained in the course's Unity scenes (see its README)."""
    return UNITY_POLICIES
