"""``python -m benchmarks.device --out DIR [--budget SECONDS] [--smoke] [--seeds K]``: see ``benchmarks.device``."""
from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

import jax

from benchmarks.device import matmul, solve, split, sweep, training
from benchmarks.device.machine import device_info
from benchmarks.device.report import markdown, write_markdown, write_plots
from benchmarks.device.sizes import GPU_CONFIG, configs, sizes_for
from benchmarks.device.suite import MIN_SECTION_S, SECTIONS, Suite, log

DEFAULT_BUDGET_S = 480.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device",
                                     description="rlrobot on this JAX backend: env, training, seeds, time to solve.")
    parser.add_argument("--out", required=True, type=Path, help="folder for device.json, device.md and the plots")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall-clock seconds for the whole suite (default {DEFAULT_BUDGET_S:.0f}); each section "
                             f"gets a share")
    parser.add_argument("--smoke", action="store_true", help="the same code at tiny sizes (CPU, seconds; CI)")
    parser.add_argument("--seeds", type=int, help="runs vmapped in the seeds section (default 64; --smoke: 2)")
    parser.add_argument("--sections", nargs="+", choices=[name for name, _ in SECTIONS],
                        help="run only these sections (default: all)")
    parser.add_argument("--inject-failure", metavar="SECTION", help=argparse.SUPPRESS)  # tests: the error path
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    jax.config.update("jax_enable_compilation_cache", False)   # every compile timed here is a cold one
    sizes = sizes_for(args.smoke, jax.default_backend())
    seeds = args.seeds or (2 if args.smoke else 64)
    try:
        machine = device_info()
    except Exception as error:  # noqa: BLE001 - the stamp must not stop the measurements
        machine = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    header = {"command": " ".join(["python -m benchmarks.device", *argv]), "mode": sizes.name, "seeds": seeds,
              "machine": machine, "compile_cache": "off (every compile here is cold)"}

    def write(result: dict, out: Path) -> None:
        result["plots"] = write_plots(result, out)
        write_markdown(result, out)

    suite = Suite(args.out, args.budget, header, write, args.inject_failure,
                  min_section_s=0.0 if args.smoke else MIN_SECTION_S)
    with tempfile.TemporaryDirectory(prefix="rlrobot-device-") as folder:
        cfgs = configs(args.smoke, Path(folder))

        def section_result(name: str) -> dict | None:
            section = suite.result["sections"].get(name) or {}
            return section.get("result") if section.get("status") == "ok" else None

        def training_rates() -> dict[str, float]:
            rows = (section_result("training") or {}).get("rows", [])
            return {r["config"]: r["agent_steps_per_second"] for r in rows}

        runners = {
            "matmul": lambda budget: matmul.measure(sizes.matmul, budget),
            "time_to_solve": lambda budget: solve.measure(GPU_CONFIG, cfgs[GPU_CONFIG], sizes, budget),
            "training": lambda budget: training.measure(cfgs, sizes, budget, section_result("matmul")),
            "env_sweep": lambda budget: sweep.measure(sizes, budget),
            "split": lambda budget: split.measure({c: cfgs[c] for c in sizes.split_configs}, sizes, budget),
            "seeds": lambda budget: training.measure_seeds({c: cfgs[c] for c in sizes.seeds_configs}, seeds, sizes,
                                                           budget, training_rates()),
        }
        if args.sections:
            runners = {name: run for name, run in runners.items() if name in args.sections}
        result = suite.run(runners)
    log(f"wrote {args.out / 'device.json'} and {args.out / 'device.md'} ({result['wall_s']:.0f} s)")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
