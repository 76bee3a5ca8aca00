"""Fixtures for the drawing tests: recordings of Unity's shipped policies, and a headless Chromium for the viewer."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # render_helpers

from render_helpers import EPISODES, MAX_STEPS, POLICY_19, SEED  # noqa: E402


@pytest.fixture(scope="session")
def recording_19():
    """Unity's 19-observation policy, first episodes as ``rlrobot-render`` plays them with the shared setting."""
    from rlrobot.compile_cache import cache_directory, enable_compile_cache
    from rlrobot.render.cli import record

    enable_compile_cache(cache_directory())  # the test session's private cache (tests/conftest.py)
    return record(POLICY_19, None, EPISODES, False, SEED, MAX_STEPS)


CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_TIMEOUT_S = 900


def _find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str:
    """Debian's chromium through apt-get (root only); a lock keeps parallel test workers from running apt at once.
    Returns why it could not be installed, or '' when it was."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install it (run: sudo apt-get install chromium)"
    with open("/tmp/rlrobot-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _find_chromium():
            return ""
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as error:
                return f"{' '.join(command)} failed: {error}"
            if done.returncode != 0:
                tail = " ".join((done.stderr or done.stdout).split())[-200:]
                return f"{' '.join(command)} exited {done.returncode}: {tail}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium that Playwright can drive: the system's, else Debian's package installed now."""
    pytest.importorskip("playwright.sync_api", reason="the viewer test needs playwright (pip install playwright)")
    path = _find_chromium()
    if path is None:
        problem = _install_chromium()
        path = _find_chromium()
        if path is None:
            pytest.skip(f"no Chromium to load the viewer in: {problem or 'the install did not provide one'}")
    return path
