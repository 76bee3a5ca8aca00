"""A Unity-protocol stand-in for the MobileRobot player: for tests and benchmarks, not a replacement for the scene.

It plays the Unity side of the ML-Agents gRPC protocol (API 1.5.0) exactly as a Linux player build does — it dials the
trainer's mlagents-envs on ``--mlagents-port``, does the two-call handshake, applies the EngineConfiguration and
EnvironmentParameters side channels (a float at once; a sampler drawn with Unity's seeded generators at each agent's
episode begin, :mod:`envs.standin.samplers`), reports episode ends twice in one message, and quits on status 400 — but
the robots are :mod:`envs.numpy_robot` (scene s6's physics as ported to NumPy, robot ``i`` in arena ``i mod 8``), not
Unity's. Anything a real build shows that the port does not model (the settle drop after a reset, Unity's physics
engine, rendering) is absent here. Use it to check a trainer's Unity path end to end without Unity.

Make a "build" that ``UnityEnvironment(file_name=...)`` launches like a ``.x86_64`` player::

    python -m envs.standin build /tmp/standin        # or: rlrobot-standin build /tmp/standin
    # -> /tmp/standin/MobileRobot.x86_64, a /bin/sh launcher for `python -m envs.standin play "$@"`

Player options (after Unity's own ``-nographics -batchmode --mlagents-port P -logFile F``, which it accepts):
``--agents N`` (default 8, the scene's arenas; times ``num_areas`` from the trainer), ``--decision-period K``,
``--shuffle-order``, ``--seed S`` (default: the trainer's seed), ``--sensors 1,18`` (the 19 observations as several
vector sensors), and for failure tests ``--crash-after N`` / ``--hang-after N`` (SIGKILL itself / stop answering after
N STEP commands) and ``--crash-once FILE`` (crash only if FILE does not exist yet; created first, so a relaunched
player does not crash again). The player logs the engine settings it last received (``engine settings: {...}``).
"""
