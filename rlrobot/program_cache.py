"""Compiled programs kept whole between runs, so that a second launch of a config neither traces nor lowers them.

JAX's persistent cache (``rlrobot.compile_cache``) saves the XLA compile, but its key is the lowered program: every
launch still traces the training program in Python and lowers it to StableHLO before it can look the key up (about a
second for the training step on a 2-core CPU, more than the cache load itself). This cache is keyed instead by what
the program is built from: the caller's description of it (settings, shapes, flags, constants), the source of the
packages that define it (``rlrobot`` and ``envs``), the versions of JAX and the libraries the program is written
with, and the devices. A hit deserialises the executable (``jax.experimental.serialize_executable``) onto the
devices it was compiled for, without tracing anything (with flat inputs and outputs: the caller's pytrees are
saved apart, so that loading imports nothing; see :class:`LoadedProgram`).

It lives beside JAX's cache (``<RLROBOT_CACHE_DIR>/programs/``) and is on exactly when that one is
(:func:`enable` is called by ``compile_cache.enable_compile_cache``). Anything that goes wrong while loading or
saving (a truncated file, another JAX, a program that cannot be serialised) costs only the usual compile: the file
is ignored, and replaced when the fresh program can be saved. Only a program that XLA compiled in this process is
saved: an executable that JAX's persistent cache loaded cannot be serialised again on the CPU backend (it loads but
fails when run). So on the CPU, when JAX's cache has a program this cache lacks (the sources changed but not the
program), it is compiled once more under a key of its own (:data:`KEY_OPTION`) and saved: that launch pays a
compile, and the following ones neither trace nor lower, instead of every launch tracing and lowering until the
sources change again.

A launch also notes which programs it asked for (:func:`prefetch_launch`): the next launch of the same config
starts loading them on a worker thread as soon as JAX has loaded, while the trainer's own modules still load and
the run folder opens. Each program is still looked up by its full key; a noted program that is not asked for again
is only a wasted load.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger("rlrobot")

FORMAT = 3                # 2: the devices a program runs on are saved with it; 3: its pytrees are saved apart
KEEP = 24                 # programs kept; older files are removed when a new one is saved
# An XLA option only the GPU compiler reads (how many autotuning candidates to keep) and that JAX's cache key
# includes: on the CPU, set to a value of the program file's own, it changes the key and nothing in the program.
KEY_OPTION = "xla_gpu_autotune_max_solutions"
PACKAGES = ("rlrobot", "envs")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "ml_dtypes")

_directory: Path | None = None
_source_digest: str | None = None
_hits_lock = threading.Lock()
_persistent_hits: dict[int, int] = {}   # thread id -> JAX persistent-cache hits seen on that thread
_listening = False
_launch_lock = threading.Lock()
_launch: tuple[Path, list[str]] | None = None  # this launch's note and the program files it asked for, in order
_prefetched: dict[Path, Future] = {}           # program file -> its load on the prefetch thread
_NOT_PREFETCHED = object()


def enable(directory: Path | None) -> None:
    """Keep programs in ``directory`` (None: off)."""
    global _directory
    _directory = None if directory is None else Path(directory)


def directory() -> Path | None:
    return _directory


def source_digest(packages: Iterable[str] = PACKAGES) -> str:
    """SHA-256 of every ``.py`` file of the packages that define the programs (by relative path, then content)."""
    global _source_digest
    if _source_digest is not None and tuple(packages) == PACKAGES:
        return _source_digest
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    value = digest.hexdigest()
    if tuple(packages) == PACKAGES:
        _source_digest = value
    return value


def _versions() -> str:
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name}={package_metadata.version(name)}")
        except package_metadata.PackageNotFoundError:
            versions.append(f"{name}=none")
    return ",".join(versions)


def _environment() -> str:
    """The devices and the JAX settings that change a compiled program."""
    import jax

    devices = jax.devices()
    flags = {name: getattr(jax.config, name, None) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion", "jax_default_prng_impl",
        "jax_threefry_partitionable", "jax_use_shardy_partitioner")}
    return repr((jax.default_backend(), devices[0].platform, devices[0].client.platform_version,
                 [(d.id, d.device_kind) for d in devices], jax.process_count(), sorted(flags.items()),
                 os.environ.get("XLA_FLAGS", "")))


def abstract(tree: Any) -> str:
    """A stable description of a pytree of arrays: its structure, and each leaf's shape, dtype and sharding."""
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    described = []
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        sharding = None if sharding is None or type(sharding).__name__ == "SingleDeviceSharding" else repr(sharding)
        described.append((tuple(getattr(leaf, "shape", ())), str(getattr(leaf, "dtype", type(leaf).__name__)),
                          sharding))
    return repr((str(treedef), described))


def constants(tree: Any) -> str:
    """A digest of a pytree's values (constants closed over by a program, such as the scene's parameters)."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(tree)
    digest = hashlib.sha256(str(treedef).encode())
    for leaf in leaves:
        array = np.asarray(leaf)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def program_key(name: str, description: Any) -> str:
    """The file name of a program: ``name`` and a digest of everything it is built from."""
    text = repr((FORMAT, name, description, source_digest(), _versions(), _environment()))
    if " at 0x" in text:  # an object's address: the key would differ on every launch
        raise ValueError(f"{name}: the program's description holds an object address")
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:40]}.jaxprogram"


def _listen() -> None:
    """Count JAX persistent-cache hits per thread (a program loaded from that cache must not be saved again)."""
    global _listening
    if _listening:
        return
    from jax import monitoring

    def on_event(event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            ident = threading.get_ident()
            with _hits_lock:
                _persistent_hits[ident] = _persistent_hits.get(ident, 0) + 1

    monitoring.register_event_listener(on_event)
    _listening = True


def _hits_here() -> int:
    with _hits_lock:
        return _persistent_hits.get(threading.get_ident(), 0)


def compile_cached(name: str, description: Any, lower: Callable[[], Any],
                   compiler_options: dict[str, Any] | None = None) -> Any:
    """``lower().compile(compiler_options)``, or the same program from an earlier run.

    ``description`` must name everything the program depends on besides the source, the libraries, the devices and
    ``compiler_options`` (settings, flags, input shapes and shardings, closed-over constants); ``lower`` returns a
    ``jax.stages.Lowered``. Only single-process programs are kept (the others compile as usual).
    """
    import jax

    options = dict(compiler_options or {})
    folder = _directory
    if folder is None or jax.process_count() > 1:
        return lower().compile(compiler_options=options or None)
    try:
        path = folder / program_key(name, (description, sorted(options.items())) if options else description)
    except Exception as error:  # a key that cannot be made only costs the compile
        logger.debug(f"Program cache: no key for {name} ({error}).")
        return lower().compile(compiler_options=options or None)
    _note_launch(path)
    loaded = _take_prefetched(path)
    program = _with_trees(path, _load(path) if loaded is _NOT_PREFETCHED else loaded)
    if program is not None:
        logger.debug(f"Program cache: loaded {path.name}{'' if loaded is _NOT_PREFETCHED else ' (prefetched)'}.")
        return program
    _listen()
    hits = _hits_here()
    lowered = lower()
    program = lowered.compile(compiler_options=options or None)
    if _hits_here() != hits and jax.default_backend() == "cpu":  # from JAX's cache: compile it here, once, to save
        hits = _hits_here()
        program = lowered.compile(compiler_options={**options, KEY_OPTION: _key_option(path)})
    if _hits_here() == hits:  # compiled here, not loaded from JAX's cache: it can be saved
        _save(path, program)
    return program


def prefetch_launch(description: Any) -> None:
    """Load, on a worker thread, the programs that the last launch of this ``description`` asked for, and note the
    ones this launch asks for (:func:`compile_cached` takes a loaded program only where its full key matches).

    ``description``: what decides the programs, less what changes between launches of one config (the run's folder,
    its seed). Loading releases Python's lock: the caller goes on importing and building meanwhile.
    """
    global _launch, _prefetched
    folder = _directory
    text = repr((FORMAT, description, source_digest(), _versions()))
    if folder is None or " at 0x" in text:
        return
    note = folder / "launches" / f"{hashlib.sha256(text.encode()).hexdigest()[:40]}.txt"
    with _launch_lock:
        _launch, _prefetched = (note, []), {}
    try:
        names = note.read_text().split()
    except (OSError, UnicodeDecodeError):
        return
    sizes = {}
    for name in names:
        if name.endswith(".jaxprogram") and "/" not in name:
            try:
                sizes[folder / name] = (folder / name).stat().st_size
            except OSError:  # gone since: asked for, it is compiled
                pass
    if not sizes:
        return
    from jax.experimental import serialize_executable  # noqa: F401  (imported here: the thread only loads)

    # One load at a time, the largest first: it gains the most from starting early, and a program asked for
    # before the thread reaches it is loaded by whoever asks (``_take_prefetched``).
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlrobot-prefetch")
    with _launch_lock:
        _prefetched = {path: loader.submit(_load, path) for path in sorted(sizes, key=sizes.get, reverse=True)}
    loader.shutdown(wait=False)  # the thread ends after its loads, and Python waits for it at exit


def _note_launch(path: Path) -> None:
    """Add ``path`` to this launch's note (rewritten whole, so that a launch that asks for other programs replaces
    the last one's list)."""
    with _launch_lock:
        if _launch is None or path.name in _launch[1]:
            return
        note, names = _launch
        names.append(path.name)
        tmp = note.with_name(f"{note.name}.{os.getpid()}.tmp")
        try:
            note.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text("\n".join(names) + "\n")
            os.replace(tmp, note)
            _prune(note.parent, "*.txt")
        except OSError as error:  # without a note the next launch loads as it needs: no prefetch
            logger.debug(f"Program cache: launch note {note.name} not written ({error}).")
            tmp.unlink(missing_ok=True)


def _take_prefetched(path: Path) -> Any:
    """What the prefetch thread's ``_load`` of ``path`` returned, or ``_NOT_PREFETCHED`` if it was not asked to or
    has not started it (then it will not)."""
    with _launch_lock:
        future = _prefetched.pop(path, None)
    return _NOT_PREFETCHED if future is None or future.cancel() else future.result()


def _key_option(path: Path) -> int:
    """A value of :data:`KEY_OPTION` that is this program file's own, so that JAX's cache key differs too."""
    return int(hashlib.sha256(path.name.encode()).hexdigest()[:7], 16) + 1


class LoadedProgram:
    """A program loaded from its file: the executable, loaded with flat inputs and outputs, called with the
    caller's pytrees (``in_tree`` of ``(args, kwargs)``, ``out_tree``); anything else is the executable's."""

    def __init__(self, flat: Any, in_tree: Any, out_tree: Any) -> None:
        self.flat, self.in_tree, self.out_tree = flat, in_tree, out_tree

    def __call__(self, *args: Any) -> Any:
        import jax

        leaves, tree = jax.tree.flatten((args, {}))
        if tree != self.in_tree:
            raise TypeError(f"the program takes {self.in_tree}, not {tree}")
        return jax.tree.unflatten(self.out_tree, self.flat(*leaves))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "flat":  # not set up (a copy being made): nothing to hand on
            raise AttributeError(name)
        return getattr(self.flat, name)


def _load(path: Path) -> tuple[Any, bytes] | None:
    """The executable of ``path`` loaded with flat pytrees, and its own pytrees still pickled: unpickling those
    imports the modules that define them, so a prefetch thread leaves that to the caller and runs beside it."""
    if not path.is_file():
        return None
    try:
        import jax
        from jax.experimental import serialize_executable

        data = pickle.loads(path.read_bytes())
        if data.get("format") != FORMAT:
            return None
        devices = {device.id: device for device in jax.devices()}
        flat = serialize_executable.deserialize_and_load(
            data["executable"], jax.tree.structure(((0,) * data["in_leaves"], {})),
            jax.tree.structure((0,) * data["out_leaves"]),
            execution_devices=[devices[device_id] for device_id in data["devices"]])
        os.utime(path)  # recently used: kept when older programs are removed
        return flat, data["trees"]
    except Exception as error:  # a bad file only costs the compile
        logger.debug(f"Program cache: {path.name} could not be loaded ({type(error).__name__}: {error}).")
        return None


def _with_trees(path: Path, loaded: tuple[Any, bytes] | None) -> LoadedProgram | None:
    if loaded is None:
        return None
    try:
        return LoadedProgram(loaded[0], *pickle.loads(loaded[1]))
    except Exception as error:  # a program whose pytrees are gone (a renamed class) only costs the compile
        logger.debug(f"Program cache: {path.name} could not be loaded ({type(error).__name__}: {error}).")
        return None


def _save(path: Path, program: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        from jax.experimental import serialize_executable

        executable, in_tree, out_tree = serialize_executable.serialize(program)
        devices = [device.id for device in program.runtime_executable().local_devices()]
        data = pickle.dumps({"format": FORMAT, "executable": executable, "in_leaves": in_tree.num_leaves,
                             "out_leaves": out_tree.num_leaves, "trees": pickle.dumps((in_tree, out_tree)),
                             "devices": devices})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        _prune(path.parent)
    except Exception as error:  # not saving only costs the next run a compile
        logger.debug(f"Program cache: {path.name} not saved ({type(error).__name__}: {error}).")
        tmp.unlink(missing_ok=True)


def _prune(folder: Path, pattern: str = "*.jaxprogram", keep: int = KEEP) -> None:
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
