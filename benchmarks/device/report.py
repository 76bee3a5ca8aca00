"""``device.md`` and the PNG plots from ``device.json``'s dictionary, and the goals table of issue 11.

Plots need matplotlib; on a machine without it (a bare GPU box) the PNGs are skipped and ``device.md`` says so: the
JSON and the Markdown tables carry every figure the plots show.
"""
from __future__ import annotations

import math
from pathlib import Path

from benchmarks.device.sizes import COURSE_CONFIG, GPU_CONFIG

PLOTS = ("throughput.png", "training.png", "split.png", "time_to_solve.png")


def _ok(result: dict, name: str) -> dict | None:
    section = result["sections"].get(name) or {}
    return section.get("result") if section.get("status") == "ok" else None


def _si(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def goals(result: dict) -> list[dict]:
    """Issue 11's goals for one H200, each with what this run measured (None: not measured) and whether it is met."""
    sweep, training, solve = _ok(result, "env_sweep"), _ok(result, "training"), _ok(result, "time_to_solve")
    seeds = _ok(result, "seeds")
    env_peak = ((sweep or {}).get("MobileRobot", {}).get("env", {}).get("peak") or {}).get("agent_steps_per_second")
    gpu = next((r for r in (training or {}).get("rows", []) if r["config"] == GPU_CONFIG), None)
    course = next((c for c in (training or {}).get("ceiling", []) if c["config"] == COURSE_CONFIG), None)
    course_row = next((r for r in (training or {}).get("rows", []) if r["config"] == COURSE_CONFIG), {})
    unsteady = "" if course_row.get("steady", True) else " (not steady)"
    solved = solve if solve and solve.get("solved") else None
    best_seeds = max((seeds or {}).get("rows", []), key=lambda r: r["agent_steps_per_second"], default=None)
    n_seeds = (seeds or {}).get("seeds", result.get("seeds"))
    rows = [
        ("env-only agent-steps/s (MobileRobot, best robot count)", ">= 1 G", env_peak, env_peak is not None
         and env_peak >= 1e9, _si(env_peak)),
        (f"training agent-steps/s, `{GPU_CONFIG}`", ">= 10 M", gpu and gpu["agent_steps_per_second"],
         gpu is not None and gpu["agent_steps_per_second"] >= 1e7, _si(gpu and gpu["agent_steps_per_second"])),
        ("course 3x512 config, fraction of the float32 matmul ceiling", ">= 50%", course and course["fraction"],
         course is not None and course["fraction"] >= 0.5, f"{course['fraction']:.1%}{unsteady}" if course else "—"),
        ("time to solve, compile excluded (s)", "<= 5 s", solved and solved["solved_excl_compile_s"],
         solved is not None and solved["solved_excl_compile_s"] <= 5.0,
         f"{solved['solved_excl_compile_s']:.2f}" if solved else "—"),
        ("time to solve, compile included (s)", "<= 15 s", solved and solved["solved_s"],
         solved is not None and solved["solved_s"] <= 15.0, f"{solved['solved_s']:.2f}" if solved else "—"),
        (f"--seeds {n_seeds} aggregate agent-steps/s"
         + (f" (`{best_seeds['config']}`)" if best_seeds else ""), ">= 20 M",
         best_seeds and best_seeds["agent_steps_per_second"],
         best_seeds is not None and best_seeds["agent_steps_per_second"] >= 2e7,
         _si(best_seeds and best_seeds["agent_steps_per_second"])),
    ]
    out = []
    for goal, target, value, met, text in rows:
        measured = value is not None and value is not False
        if not measured and goal.startswith("time to solve") and solve is not None:
            text = f"not solved ({solve.get('stopped')})"
            measured = True
        judged = measured and not (goal.startswith("course") and unsteady)
        out.append({"goal": goal, "target": target, "value": value if measured else None, "shown": text,
                    "met": bool(met) if judged else None,
                    "note": None if judged or not measured else "not judged: not the steady state"})
    return out


def header_lines(result: dict) -> list[str]:
    m = result.get("machine") or {}
    v = m.get("versions") or {}
    smi = (m.get("nvidia_smi") or [{}])[0] if m.get("nvidia_smi") else {}
    lines = [f"# rlrobot on {m.get('device', '?')} ({result['mode']} run)", ""]
    if result["mode"] == "smoke":
        lines += ["**Smoke run**: tiny sizes to prove the suite runs; its figures say nothing about any device.", ""]
    lines += [
        f"`{result['command']}`, {m.get('date', '?')}; budget {result['budget_s']:.0f} s, "
        f"whole run {result.get('wall_s', 0.0):.0f} s.", "",
        f"Device: {m.get('device', '?')} × {m.get('device_count', '?')} ({m.get('platform', '?')}, "
        f"{m.get('platform_version') or '?'}), memory {_si(m.get('memory_bytes'), 'B')}"
        + (f", driver {smi.get('driver_version')}" if smi.get("driver_version") else "") + "; host "
        f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores). Python {m.get('python', '?')}, JAX {v.get('jax')}, "
        f"jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, optax {v.get('optax')}"
        + (f", {v['jax_plugins']}" if v.get("jax_plugins") else "") + ".",
    ]
    return lines


def goals_lines(result: dict) -> list[str]:
    lines = ["", "## Goals (issue 11, one H200)", "", "| goal | target | measured | met |", "|---|---|---:|---|"]
    for g in result.get("goals") or goals(result):
        met = (g.get("note") or "not measured") if g["met"] is None else ("yes" if g["met"] else "no")
        lines.append(f"| {g['goal']} | {g['target']} | {g['shown']} | {met} |")
    return lines


def status_lines(result: dict) -> list[str]:
    lines = ["", "## Sections", "", "| section | status | seconds | note |", "|---|---|---:|---|"]
    for name, s in result["sections"].items():
        note = s.get("error") or s.get("why") or ""
        seconds = f"{s['seconds']:.1f}" if "seconds" in s else "—"
        lines.append(f"| {name} | {s.get('status', 'running')} | {seconds} | {note[:200].replace('|', '/')} |")
    return lines


def matmul_lines(mm: dict | None) -> list[str]:
    if not mm:
        return []
    lines = ["", "## Matmul rate", "", "`x = tanh(x @ w)` chained in one jitted loop (as `python -m benchmarks`); "
             f"the NN-FLOP ceiling uses the float32 rate at {mm['ceiling_shape']}.", "",
             "| shape | dtype | iterations | FLOP/s | compile (s) |", "|---|---|---:|---:|---:|"]
    for r in mm["rows"]:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['iterations']} | {_si(r['flops_per_second'])} | "
                     f"{r['compile_s']:.2f} |")
    return lines


def solve_lines(s: dict | None) -> list[str]:
    if not s:
        return []
    f = s["final"]
    lo, hi = f["success_rate_ci95"]
    lines = ["", f"## Time to solve: `{s['config']}`, seed {s['seed']}", "",
             f"{s['num_envs']:,} robots, {s['steps_per_iteration']:,} agent-steps per update, "
             f"{s['iterations_per_call']} update(s) per device call. Stopped: {s['stopped']}.", "",
             "| solved | launch → solved (s) | excl. compile (s) | compile (s) | steps | validations (s) | "
             "success [95% CI] | mean return | mean length |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines.append(f"| {'yes' if s['solved'] else 'no'} | {fmt(s['solved_s'])} | {fmt(s['solved_excl_compile_s'])} | "
                 f"{s['compile_s']:.2f} | {s['solved_step'] or s['steps']:,} | {s['validation_s']:.2f} "
                 f"({len(s['validations'])}) | {f['success_rate']:.3f} [{lo:.3f}, {hi:.3f}] | "
                 f"{f['mean_return']:.2f} | {f['mean_length']:.1f} |")
    lines += ["", f"Validation: {s['validation_episodes']} episodes, compiled once in "
              f"{s['validation_compile_s']:.2f} s (not counted). Whole section: {s['wall_s']:.1f} s."]
    return lines


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def training_lines(t: dict | None) -> list[str]:
    if not t:
        return []
    lines = ["", "## Training throughput", "", "| config | network | robots × steps | minibatch × count × epochs | "
             "agent-steps/s | iterations × repeats | compile (s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in t["rows"]:
        steady = "" if r.get("steady", True) else " (not steady: too slow for its share of the time)"
        lines.append(f"| `{r['config']}` | {r['network']} | {r['num_envs']:,} × {r['rollout_steps']} | "
                     f"{r['minibatch']:,} × {r['minibatches']} × {r['epochs']} | {r['agent_steps_per_second']:,.0f}"
                     f"{steady} | {r['iterations']} × {r['repeats']} | {r['compile_s']:.1f} |")
    if t["ceiling"]:
        lines += ["", "NN-FLOP ceiling (as `python -m benchmarks`): FLOPs per agent-step = actor forward + 2 critic "
                  "forwards + num_epoch × 3 × (actor + critic forward); timed from the steady state (every robot "
                  "past time_horizon steps). The critic's pass over the carried steps of the window is not counted, "
                  "so long time horizons do more work than this.", "",
                  "| config | NN FLOPs / agent-step | ceiling agent-steps/s | achieved / ceiling | of peak f32 | "
                  "of peak bf16 |", "|---|---:|---:|---:|---:|---:|"]
        for c in t["ceiling"]:
            bf16 = c.get("fraction_of_peak_bfloat16")
            lines.append(f"| `{c['config']}` | {_si(c['flops_per_agent_step'])} | "
                         f"{c['ceiling_agent_steps_per_second']:,.0f} | {c['fraction']:.1%} | "
                         f"{c['fraction_of_peak_float32']:.1%} | {'—' if bf16 is None else f'{bf16:.1%}'} |")
    if t.get("ceiling_note"):
        lines += ["", t["ceiling_note"]]
    return lines + failure_lines(t)


def failure_lines(result: dict) -> list[str]:
    return [f"- `{f['config']}` not measured: {f['error'][:300]}" for f in result.get("failures", [])]


def sweep_lines(sweep: dict | None) -> list[str]:
    if not sweep:
        return []
    lines = ["", "## Robots sweep (agent-steps/s)"]
    for scene, cols in sweep.items():
        env_rows = {r["num_envs"]: r for r in cols["env"]["rows"]}
        inf_rows = {r["num_envs"]: r for r in cols["inference"]["rows"]}
        lines += ["", f"**{scene}** (inference: {cols['network']} policy). Env only stopped: "
                  f"{cols['env']['stopped']}; env + inference stopped: {cols['inference']['stopped']}.", "",
                  "| robots | env only | env + inference | compile env (s) | compile inf. (s) |",
                  "|---:|---:|---:|---:|---:|"]
        for n in sorted(set(env_rows) | set(inf_rows)):
            e, i = env_rows.get(n), inf_rows.get(n)
            lines.append(f"| {n:,} | {_si(e and e['agent_steps_per_second'])} | "
                         f"{_si(i and i['agent_steps_per_second'])} | "
                         f"{'—' if e is None else format(e['compile_s'], '.2f')} | "
                         f"{'—' if i is None else format(i['compile_s'], '.2f')} |")
        for column in ("env", "inference"):
            failure = cols[column].get("failure")
            if failure:
                lines.append(f"\n{column} at {failure['num_envs']:,} robots: {failure['error'][:300]}")
    return lines


def split_lines(split: dict | None) -> list[str]:
    if not split:
        return []
    lines = ["", "## Where an iteration's time goes", "",
             "Each part jitted alone on the iteration's shapes (median of timed calls); the whole is the trainer's "
             "program at one iteration. rollout = act + env step for every robot; gae = normalisers + critic over "
             "the window + GAE; update = the epochs of Adam steps over the ready steps (those of completed "
             "trajectories: their number, and the update's time, vary from iteration to iteration).", "",
             "| config | robots × steps (window) | ready steps | whole (ms) | rollout | gae | update | other (ms) | "
             "dominant |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in split["rows"]:
        p, f = r["parts_s"], r["fractions"]
        lines.append(f"| `{r['config']}` | {r['num_envs']:,} × {r['rollout_steps']} ({r['window_steps']}) | "
                     f"{r['ready_steps']:,} | {r['whole_s'] * 1e3:.1f} | "
                     + " | ".join(f"{p[k] * 1e3:.1f} ms ({f[k]:.0%})" for k in ("rollout", "gae", "update"))
                     + f" | {r['other_s'] * 1e3:.1f} | {r['dominant']} |")
    return lines + failure_lines(split)


def seeds_lines(seeds: dict | None) -> list[str]:
    if not seeds:
        return []
    lines = ["", f"## --seeds {seeds['seeds']}: runs vmapped in one program", "",
             "| config | robots per run | iterations timed | agent-steps/s (all runs) | per run | compile (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in seeds["rows"]:
        lines.append(f"| `{r['config']}` | {r['num_envs']:,} | {r['iterations']} | "
                     f"{r['agent_steps_per_second']:,.0f} | {r['per_run_steps_per_second']:,.0f} | "
                     f"{r['compile_s']:.1f} |")
    return lines + failure_lines(seeds)


def markdown(result: dict) -> str:
    lines = header_lines(result) + goals_lines(result) + status_lines(result)
    lines += matmul_lines(_ok(result, "matmul")) + solve_lines(_ok(result, "time_to_solve"))
    lines += training_lines(_ok(result, "training")) + sweep_lines(_ok(result, "env_sweep"))
    lines += split_lines(_ok(result, "split")) + seeds_lines(_ok(result, "seeds"))
    if result.get("plots"):
        lines += ["", f"Plots: {result['plots']}"]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict, out: Path) -> None:
    result["goals"] = goals(result)
    (out / "device.md").write_text(markdown(result))


def write_plots(result: dict, out: Path) -> str:
    """The PNGs, or why there are none; returns the note for device.md."""
    try:
        import matplotlib
    except ImportError:
        return "none: matplotlib is not installed here (device.json and the tables above hold every figure)."
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, plot in (("throughput.png", plot_sweep), ("training.png", plot_training), ("split.png", plot_split),
                       ("time_to_solve.png", plot_solve)):
        fig = plot(result, plt)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return ", ".join(written) or "none (no section measured anything to plot)"


def plot_sweep(result: dict, plt):
    sweep = _ok(result, "env_sweep")
    if not sweep:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scene, cols in sweep.items():
        for column, style in (("env", "-"), ("inference", "--")):
            rows = cols[column]["rows"]
            if rows:
                ax.plot([r["num_envs"] for r in rows], [r["agent_steps_per_second"] for r in rows], style,
                        marker="o", label=f"{scene}, {'env only' if column == 'env' else 'env + inference'}")
    ax.set(xscale="log", yscale="log", xlabel="parallel robots", ylabel="agent-steps / s")
    ax.set_title(f"{(result.get('machine') or {}).get('device', '?')}: throughput vs robots", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_training(result: dict, plt):
    t = _ok(result, "training")
    if not t or not t["rows"]:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = t["rows"]
    ceilings = {c["config"]: c for c in t["ceiling"]}
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["agent_steps_per_second"] for r in rows], width=0.4, label="achieved")
    ax.bar([i + 0.2 for i in x], [ceilings[r["config"]]["ceiling_agent_steps_per_second"]
                                  if r["config"] in ceilings else 0 for r in rows], width=0.4,
           label="NN-FLOP ceiling (float32)")
    ax.set_xticks(list(x), [f"{Path(r['config']).name}\n{r['network']}, {r['num_envs']:,} robots" for r in rows],
                  fontsize=7)
    ax.set(yscale="log", ylabel="training agent-steps / s")
    ax.legend(fontsize=7)
    return fig


def plot_split(result: dict, plt):
    split = _ok(result, "split")
    if not split or not split["rows"]:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    rows = split["rows"]
    for i, r in enumerate(rows):
        left = 0.0
        for part, color in (("rollout", "tab:blue"), ("gae", "tab:orange"), ("update", "tab:green")):
            width = r["fractions"][part]
            ax.barh(i, width, left=left, color=color, label=part if i == 0 else None)
            left += width
    ax.set_yticks(range(len(rows)), [Path(r["config"]).name for r in rows], fontsize=7)
    ax.set_xlabel("fraction of the parts' time")
    ax.legend(fontsize=7)
    return fig


def plot_solve(result: dict, plt):
    s = _ok(result, "time_to_solve")
    if not s or not s["curve"]:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [p["seconds"] for p in s["curve"]]
    ax1.plot(xs, [math.nan if p["success_rate"] is None else p["success_rate"] for p in s["curve"]], marker=".")
    ax2.plot(xs, [math.nan if p["mean_reward"] is None else p["mean_reward"] for p in s["curve"]], marker=".")
    for ax, label in ((ax1, "success rate (training log)"), (ax2, "mean reward (training log)")):
        ax.axvline(s["compile_s"], color="grey", linestyle=":", label="compiled")
        if s["solved"]:
            ax.axvline(s["solved_s"], color="tab:green", linestyle="--", label="validated solved")
        ax.set(xlabel="seconds from launch (compile included, validations not)", ylabel=label)
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    return fig
