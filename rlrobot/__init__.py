"""rlrobot: an ML-Agents-compatible PPO trainer in JAX."""

__version__ = "0.1.0"
