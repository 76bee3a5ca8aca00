"""Multi-host: two local processes of two CPU devices each (jax.distributed over localhost, gloo collectives)."""
import socket
import subprocess
import sys

import pytest
from scale_helpers import REPO, assert_checkpoints_close, forced_device_env, tiny_config

from rlrobot.cli import main
from rlrobot.distributed import DistributedSettings, launcher_requests


def test_multi_host_flags_go_together_and_launchers_are_detected():
    DistributedSettings().check()
    with pytest.raises(ValueError, match="--num-processes, --process-id: needed with the other multi-host flags"):
        DistributedSettings(coordinator_address="localhost:1234").check()
    with pytest.raises(ValueError, match=r"--process-id 2: must be in \[0, --num-processes 2\)"):
        DistributedSettings("localhost:1234", 2, 2).check()
    assert not launcher_requests({}) and not launcher_requests({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"})
    assert launcher_requests({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"})
    assert launcher_requests({"JAX_COORDINATOR_ADDRESS": "node0:1234"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_single_process_run_and_only_process_0_writes(tmp_path, capsys):
    config, results = tiny_config(tmp_path, 2048), tmp_path / "results"
    address = f"localhost:{free_port()}"
    processes = [subprocess.Popen([sys.executable, "-m", "rlrobot.cli", config, "--run-id=hosts", "--results-dir",
                                   str(results), "--coordinator-address", address, "--num-processes", "2",
                                   "--process-id", str(i)], cwd=REPO, env=forced_device_env(2),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    assert "x 4 in 2 process(es)" in logs[0] and "Exported" in logs[0]
    assert "Exported" not in logs[1] and "Step:" not in logs[1]
    assert len(list((results / "hosts" / "MobileRobot").glob("events.out*"))) == 1
    assert main([config, "--run-id=one", "--results-dir", str(results)]) == 0
    assert_checkpoints_close(results / "one" / "MobileRobot" / "checkpoint.ckpt",
                             results / "hosts" / "MobileRobot" / "checkpoint.ckpt")
