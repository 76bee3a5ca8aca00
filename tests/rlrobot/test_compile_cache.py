"""The persistent compilation cache: a second run of a config loads the programs the first one compiled."""
import os
import subprocess
import sys
from pathlib import Path

from test_cli import TINY

from rlrobot.compile_cache import cache_directory

REPO = Path(__file__).resolve().parents[2]


def test_cache_directory_follows_the_environment(tmp_path):
    assert cache_directory({"RLROBOT_CACHE_DIR": str(tmp_path)}) == tmp_path / "jax"
    assert cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "rlrobot" / "jax"
    assert cache_directory({"HOME": "/nowhere"}).parts[-2:] == ("rlrobot", "jax")
    for off in ("0", "false", "OFF", " no "):
        assert cache_directory({"RLROBOT_COMPILE_CACHE": off, "RLROBOT_CACHE_DIR": str(tmp_path)}) is None


def _learn(tmp_path: Path, run_id: str, *flags: str, **environ: str) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(max_steps=1024, schedule="linear"))
    proc = subprocess.run([sys.executable, "-m", "rlrobot.cli", str(config), f"--run-id={run_id}", "--results-dir",
                           str(tmp_path / "results"), *flags], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_second_run_compiles_nothing_new_and_the_cache_can_be_turned_off(tmp_path):
    cache = tmp_path / "cache"
    _learn(tmp_path, "first", RLROBOT_CACHE_DIR=str(cache))
    entries = sorted(p.name for p in (cache / "jax").iterdir())
    assert entries   # the training program (and the small ones) were stored
    _learn(tmp_path, "second", RLROBOT_CACHE_DIR=str(cache))
    assert sorted(p.name for p in (cache / "jax").iterdir()) == entries   # every program came from the cache
    _learn(tmp_path, "off", "--no-compile-cache", RLROBOT_CACHE_DIR=str(tmp_path / "unused"))
    _learn(tmp_path, "off-env", RLROBOT_CACHE_DIR=str(tmp_path / "unused"), RLROBOT_COMPILE_CACHE="0")
    assert not (tmp_path / "unused").exists()
