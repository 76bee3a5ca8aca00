"""Shared pieces of the Unity-protocol tests: ports no two test processes share, the stand-in build, a leak check.

Import the fixtures into a test module (``from unity_ports import standin_build, no_leftover_players``). Ports:
each pytest-xdist worker (``PYTEST_XDIST_WORKER=gwN``) owns a block of 1000 below the kernel's ephemeral range,
starts at a per-process random offset in it (so parallel runs by other people rarely meet) and skips ports that are
in use.
"""
from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest

from envs.standin.build import write_launcher

_FIRST, _BLOCK = 20000, 1000
_worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next = _FIRST + _BLOCK * (_worker % 12) + random.Random(os.getpid()).randrange(0, _BLOCK // 2)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("localhost", port))
        except OSError:
            return False
    return True


def free_base_port(count: int = 1) -> int:
    """A port ``p`` with ``p .. p+count-1`` free now and never handed out before in this process."""
    global _next
    for _ in range(_BLOCK // 2):
        port, _next = _next, _next + count
        if all(_bindable(port + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} free consecutive ports near {_next}")


@pytest.fixture(scope="session")
def standin_build(tmp_path_factory) -> Path:
    """The stand-in's launcher, ``.../MobileRobot.x86_64``."""
    return write_launcher(tmp_path_factory.mktemp("standin"))


def _children() -> dict[int, str]:
    """This process's child processes: ``{pid: state + command line}`` (a zombie has state Z, no command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != os.getpid():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry.name)] = f"{fields[0]} {cmdline}"
    return found


@pytest.fixture(autouse=True)
def no_leftover_players():
    """Fail a test that leaves a stand-in player running or a zombie behind."""
    before = set(_children())
    yield
    for _ in range(20):  # a player told to quit may take a moment
        leaked = {pid: what for pid, what in _children().items()
                  if pid not in before and ("standin" in what or "MobileRobot" in what or what.startswith("Z"))}
        if not leaked:
            return
        time.sleep(0.1)
    pytest.fail(f"processes left behind: {leaked}")
