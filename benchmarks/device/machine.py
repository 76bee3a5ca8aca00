"""The machine stamp of a device run: ``benchmarks.machine.machine_info()`` plus the accelerator's name, driver and
memory, and the versions of everything that runs the numbers."""
from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

import jax

from benchmarks.machine import machine_info

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "tensorboardX", "protobuf", "matplotlib")


def versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    plugins = sorted(d.metadata["Name"] for d in metadata.distributions()
                     if (d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda", "jax-rocm")))
    found["jax_plugins"] = ", ".join(f"{p} {metadata.version(p)}" for p in plugins) or None
    return found


def nvidia_smi() -> list[dict] | None:
    """``nvidia-smi``'s name, driver, memory and clocks per GPU; None when there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = "name,driver_version,memory.total,clocks.max.sm,power.limit,pci.bus_id"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return [{"error": str(error)}]
    names = fields.split(",")
    return [dict(zip(names, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]


def device_info() -> dict:
    devices = jax.devices()
    first = devices[0]
    try:
        stats = first.memory_stats() or {}
    except Exception:  # a platform without memory stats
        stats = {}
    try:
        platform_version = first.client.platform_version
    except Exception:
        platform_version = None
    return {**machine_info(), "device": first.device_kind, "platform": first.platform, "device_count": len(devices),
            "platform_version": platform_version, "memory_bytes": stats.get("bytes_limit"),
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "nvidia_smi": nvidia_smi(), "versions": versions()}
