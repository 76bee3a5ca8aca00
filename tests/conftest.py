"""Shared test fixtures: where the reference material lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("RLROBOT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (the Unity-trained ONNX policies)."""
    data = SHARED / "data"
    if not (data / "MobileRobot-19obs.onnx").is_file():
        pytest.skip(f"reference policies not found in {data} (set RLROBOT_SHARED)")
    return data
