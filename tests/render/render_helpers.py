"""What the drawing tests share: Unity's shipped policies and one recording setting for the 19-observation one (so
its program compiles once a session; the session's compile cache serves the command-line runs too)."""
from pathlib import Path

UNITY = Path(__file__).resolve().parents[1] / "data" / "unity"
POLICY_19 = UNITY / "MobileRobot-19obs.onnx"
POLICY_22 = UNITY / "MobileRobot-22obs-497100.onnx"
EPISODES, MAX_STEPS, SEED = 4, 80, 0
