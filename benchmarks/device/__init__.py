"""The GPU suite: one command that measures what rlrobot does on the JAX backend it finds.

    python -m benchmarks.device --out DIR [--budget SECONDS] [--smoke] [--seeds 64]

It writes ``DIR/device.json`` (after every section, so a run cut short still leaves what it measured),
``DIR/device.md`` and up to four PNG plots, stamped with the device's name, driver, memory, the JAX/jaxlib/flax/optax
versions and the date (``machine``). Sections, in the order they run (``suite.SECTIONS``), each with a share of
``--budget``:

* ``matmul``: the device's matmul rate, float32 as JAX runs it by default and bf16 (``matmul``);
* ``time_to_solve``: ``configs/MobileRobot-gpu.yaml`` from launch to a policy that passes 1000 validation episodes
  (checked after every device call, confirmed by 1000 more), compile time included and separate (``solve``);
* ``training``: training agent-steps/s of the fast, course and GPU configs, compile separate, and each one's fraction
  of its NN-FLOP ceiling (``training``);
* ``env_sweep``: env-only and env + inference agent-steps/s from 4,096 robots, doubling until throughput stops
  improving by more than 10%, memory runs out (recorded) or the section's time is spent, for MobileRobot and
  MobileRobotObstacles; each timed run is sized to about a quarter second from the last measured rate (``sweep``);
* ``split``: which part of an iteration dominates: rollout, normalisers + values + GAE, update, each jitted alone on
  the iteration's shapes (``split``);
* ``seeds``: ``--seeds`` runs of the fast and the GPU config vmapped in one program, aggregate agent-steps/s
  (``training``).

Buffers are donated to the training program (one copy of the state on the device), and the persistent compile cache
is off, so every compile time is a cold one. Run it on an offline GPU box with ``run.sh`` (``offline``).

A section that fails records its error and the suite goes on. ``--smoke`` runs the same code at tiny sizes (configs
shrunk into a temporary folder, ``sizes``) and is what CI runs. Nothing here estimates a figure: every number is a
measurement on the machine that ran it.
"""
