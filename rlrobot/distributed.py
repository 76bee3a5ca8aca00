"""Multi-host runs: join a ``jax.distributed`` job when the command line or the launcher asks for one.

Every process runs the same ``rlrobot-learn`` command and drives its local devices; the robots are split over the
devices of all processes (``parallel``). Must run before JAX touches a device, hence its own module.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger("rlrobot")


@dataclass(frozen=True)
class DistributedSettings:
    """``--coordinator-address HOST:PORT --num-processes N --process-id I`` (all None: ask the environment)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.coordinator_address, self.num_processes, self.process_id))

    def check(self) -> None:
        """One-line ValueError naming the flag: all three flags go together, and the id must fit the count."""
        if not self.given:
            return
        missing = [flag for flag, v in (("--coordinator-address", self.coordinator_address),
                                        ("--num-processes", self.num_processes), ("--process-id", self.process_id))
                   if v is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: needed with the other multi-host flags "
                             f"(--coordinator-address, --num-processes, --process-id).")
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"--process-id {self.process_id}: must be in [0, --num-processes {self.num_processes}).")


def launcher_requests(environ: Mapping[str, str]) -> bool:
    """Whether a launcher started this process as one of several: JAX's own variable, Slurm or Open MPI."""
    if "JAX_COORDINATOR_ADDRESS" in environ:
        return True
    slurm = "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1
    open_mpi = "OMPI_MCA_orte_hnp_uri" in environ and int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    return slurm or open_mpi


def initialize(settings: DistributedSettings, environ: Mapping[str, str] = os.environ) -> bool:
    """Join the job (flags first, else JAX's auto-detection); returns whether this is a multi-process run."""
    settings.check()
    if not (settings.given or launcher_requests(environ)):
        return False
    import jax

    jax.distributed.initialize(settings.coordinator_address, settings.num_processes, settings.process_id)
    logger.info(f"Process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local "
                f"device(s), {jax.device_count()} in all.")
    return True
