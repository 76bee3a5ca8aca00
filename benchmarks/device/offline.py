"""Install, with no network and no pip, the few packages the suite imports that a GPU box may lack, from wheels
carried beside the repository (``fetch_wheels.sh`` downloads them where the network is reachable).

A typical shared GPU box has JAX with CUDA, flax, optax, chex, numpy, PyYAML, rich and onnx. The suite also imports
tensorboardX (``rlrobot.summaries``), which needs protobuf and packaging. For each module in ``NEEDED`` that this
Python cannot import, the newest carried wheel of its distribution that fits this interpreter is unpacked into
``--target`` (a wheel is a zip of what site-packages receives); modules already importable are left alone, so the
box's own protobuf is never shadowed. Then put ``--target`` and the repository on ``PYTHONPATH`` (``run.sh`` does).
matplotlib, torch and mlagents-envs are not needed: without matplotlib the suite writes no PNGs and says so.

    python -m benchmarks.device.offline [--wheels .whl] [--target /tmp/rlrobot-site]
    python -m benchmarks.device.offline --requirements     # what fetch_wheels.sh downloads, one per line
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import sys
import zipfile
from pathlib import Path

# import name -> (distribution, requirement fetch_wheels.sh downloads)
NEEDED = {
    "tensorboardX": ("tensorboardX", "tensorboardX>=2.6"),
    "google.protobuf": ("protobuf", "protobuf>=3.20"),
    "packaging": ("packaging", "packaging"),
}
REPO = Path(__file__).resolve().parents[2]


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+]", version))


def fits(wheel: Path, python: tuple[int, int] = sys.version_info[:2], machine: str = "x86_64") -> bool:
    """Whether a wheel's tags suit this interpreter: pure Python, a stable-ABI (abi3) build for an older or equal
    CPython, or a build for exactly this CPython; on Linux for this machine."""
    parts = wheel.name[:-4].split("-")
    if len(parts) < 5:
        return False
    pythons, abis, platforms = (set(p.split(".")) for p in parts[-3:])
    here = f"cp{python[0]}{python[1]}"
    pure = "none" in abis and ("any" in platforms) and bool(pythons & {"py3", f"py{python[0]}{python[1]}", here})
    if pure:
        return True
    if not any(p.startswith(("manylinux", "linux")) and p.endswith(machine) for p in platforms):
        return False
    if "abi3" in abis:
        return any(p.startswith("cp3") and int(p[3:]) <= python[1] for p in pythons if p[3:].isdigit())
    return here in pythons


def choose_wheel(distribution: str, folder: Path) -> Path | None:
    """The newest wheel of ``distribution`` in ``folder`` that fits this interpreter."""
    name = _normalise(distribution)
    found = [w for w in folder.glob("*.whl") if _normalise(w.name.split("-")[0]) == name and fits(w)]
    return max(found, key=lambda w: _version_key(w.name.split("-")[1]), default=None)


def unpack(wheel: Path, target: Path) -> None:
    """A wheel's files into ``target``, its ``*.data/purelib`` and ``platlib`` merged in (scripts are dropped)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    for data in target.glob("*.data"):
        for lib in ("purelib", "platlib"):
            if (data / lib).is_dir():
                shutil.copytree(data / lib, target, dirs_exist_ok=True)
        shutil.rmtree(data)


def install(wheels: Path, target: Path, needed: dict[str, tuple[str, str]] = NEEDED) -> dict[str, str]:
    """Unpack a wheel for every needed module this Python lacks; returns module -> what was done."""
    done = {}
    target.mkdir(parents=True, exist_ok=True)
    for module, (distribution, _) in needed.items():
        if importable(module) or (target / module.split(".")[0]).exists():
            done[module] = "already importable"
            continue
        wheel = choose_wheel(distribution, wheels) if wheels.is_dir() else None
        if wheel is None:
            done[module] = f"MISSING: no {distribution} wheel for this Python in {wheels}"
            continue
        unpack(wheel, target)
        done[module] = f"installed {wheel.name}"
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of carried wheels (default .whl)")
    parser.add_argument("--target", type=Path, default=Path("/tmp/rlrobot-site"), help="where to unpack them")
    parser.add_argument("--requirements", action="store_true", help="print the requirements to download and exit")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(requirement for _, requirement in NEEDED.values()))
        return 0
    done = install(args.wheels, args.target)
    for module, what in done.items():
        print(f"[offline] {module}: {what}", file=sys.stderr)
    return 1 if any(what.startswith("MISSING") for what in done.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
