"""The section runner: each section gets a share of the budget, runs in a ``try``, and the results are written after
every section (``device.json`` and ``device.md``), so a run that is cut short or crashes half-way still leaves what it
measured. A section that fails records its error and traceback; the next one runs."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (name, share of the budget): a section may use its share plus whatever earlier sections left unused.
SECTIONS = (("matmul", 0.05), ("time_to_solve", 0.22), ("training", 0.22), ("env_sweep", 0.30),
            ("split", 0.09), ("seeds", 0.12))
# A section that would have less than this many seconds is skipped (not started) in full mode.
MIN_SECTION_S = 5.0


_log_file: Path | None = None   # device.log in the output folder, once a Suite is made


def log(message: str) -> None:
    """To stderr, and to ``device.log`` beside the results (what ran when, and why a section stopped)."""
    line = f"[device] {time.strftime('%H:%M:%S')} {message}"
    print(line, file=sys.stderr, flush=True)
    if _log_file is not None:
        try:
            with open(_log_file, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


class Budget:
    """Wall-clock deadlines: the whole suite's, and the current section's (``left()``)."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.end = self.start + seconds
        self.section_end = self.end

    def begin(self, share: float, remaining_shares: float) -> float:
        """Open a section with ``share`` of what is left (the shares of it and the sections after it sum to
        ``remaining_shares``); returns its seconds."""
        now = time.perf_counter()
        seconds = max(0.0, self.end - now) * share / max(remaining_shares, 1e-9)
        self.section_end = now + seconds
        return seconds

    def left(self) -> float:
        """Seconds left to the current section."""
        return self.section_end - time.perf_counter()

    def sub(self, parts: int) -> float:
        """An equal part of what the section has left, for ``parts`` pieces still to run."""
        return max(0.0, self.left()) / max(parts, 1)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def is_out_of_memory(error: BaseException) -> bool:
    """XLA's allocation failure (``RESOURCE_EXHAUSTED``, or an out-of-memory message), at compile or run time."""
    text = f"{type(error).__name__}: {error}"
    return any(word in text for word in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))


class Suite:
    """Runs the sections in order and keeps ``result`` written to ``out``."""

    def __init__(self, out: Path, budget_s: float, header: dict, write: Callable[[dict, Path], None],
                 inject_failure: str | None = None, min_section_s: float = MIN_SECTION_S) -> None:
        self.out, self.write, self.inject_failure = out, write, inject_failure
        self.min_section_s = min_section_s
        self.budget = Budget(budget_s)
        self.result: dict[str, Any] = {**header, "budget_s": budget_s, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)
        global _log_file
        _log_file = out / "device.log"
        _log_file.write_text("")

    def run(self, runners: dict[str, Callable[[Budget], Any]]) -> dict:
        names = [name for name, _ in SECTIONS if name in runners]
        shares = dict(SECTIONS)
        for index, name in enumerate(names):
            seconds = self.budget.begin(shares[name], sum(shares[n] for n in names[index:]))
            self.section(name, runners[name], seconds)
        self.result["wall_s"] = self.budget.elapsed()
        self.save()
        return self.result

    def section(self, name: str, runner: Callable[[Budget], Any], seconds: float) -> None:
        record: dict[str, Any] = {"budget_s": round(seconds, 1)}
        self.result["sections"][name] = record
        if seconds < self.min_section_s:
            record.update(status="skipped", why=f"budget spent ({seconds:.1f} s left for this section)")
            log(f"{name}: skipped, {seconds:.1f} s left")
            self.save()
            return
        log(f"{name}: up to {seconds:.0f} s")
        t0 = time.perf_counter()
        try:
            if self.inject_failure == name:
                raise RuntimeError(f"failure injected into section {name!r} (--inject-failure)")
            record["result"] = runner(self.budget)
            record["status"] = "ok"
        except Exception as error:  # one failing section must not end the suite: record it, go on
            record.update(status="error", error=f"{type(error).__name__}: {error}"[:2000],
                          traceback=traceback.format_exc()[-4000:], out_of_memory=is_out_of_memory(error))
            log(f"{name}: failed: {record['error'][:300]}")
        record["seconds"] = time.perf_counter() - t0
        self.result["wall_s"] = self.budget.elapsed()
        self.save()

    def save(self) -> None:
        """device.json (atomically) and whatever ``write`` adds (device.md)."""
        path = self.out / "device.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=_jsonable))
        os.replace(tmp, path)
        try:
            self.write(self.result, self.out)
        except Exception as error:  # the report must not take the measurements down with it
            log(f"could not write the report: {type(error).__name__}: {error}")


def _jsonable(value: Any) -> Any:
    """NumPy scalars and the like, as plain numbers or text."""
    try:
        return value.item()
    except AttributeError:
        return str(value)
