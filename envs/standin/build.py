"""Writes the stand-in's launcher: an executable file mlagents-envs starts like a Linux player.

mlagents-envs runs ``file_name`` with an argv (no shell), so the "build" is a ``/bin/sh`` script that execs this
interpreter on ``-m envs.standin play``. It puts the project root on ``PYTHONPATH`` so the launcher works from a clean
clone's venv as well as from an (editable) install, and it uses absolute paths, since mlagents-envs strips ``.app``,
``.exe``, ``.x86_64`` and ``.x86`` anywhere in the path before looking for the file.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

LAUNCHER_NAME = "MobileRobot.x86_64"
_MANGLED = (".app", ".exe", ".x86")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_launcher(directory: str | os.PathLike, scene: str = "MobileRobot") -> Path:
    """Create ``directory/MobileRobot.x86_64`` (folders included), serving the built-in ``scene``, and return its
    absolute path."""
    import envs

    if scene not in envs.registered():
        raise ValueError(f"{scene}: not a built-in scene; known: {', '.join(envs.registered())}")
    folder = Path(directory).absolute()
    bad = next((s for s in _MANGLED if s in str(folder)), None)
    if bad is not None:
        raise ValueError(f"{folder}: mlagents-envs strips {bad!r} from launch paths, so no build can be found "
                         f"there; pick a folder without '.app', '.exe' or '.x86' in its path")
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / LAUNCHER_NAME
    root, python = shlex.quote(str(PROJECT_ROOT)), shlex.quote(os.path.abspath(sys.executable))
    launcher.write_text(
        "#!/bin/sh\n"
        "# rlrobot's MobileRobot protocol stand-in (envs/standin), not a Unity build.\n"
        f'PYTHONPATH={root}${{PYTHONPATH:+:"$PYTHONPATH"}}\n'
        "export PYTHONPATH\n"
        f'exec {python} -m envs.standin play --scene {shlex.quote(scene)} "$@"\n')
    launcher.chmod(0o755)
    return launcher
