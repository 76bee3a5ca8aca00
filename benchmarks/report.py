"""Writes what ``python -m benchmarks`` measured: ``results.json``, ``results.md`` and
``throughput.png``/``ceiling.png``."""
from __future__ import annotations

import json
import os

COLUMNS = [("env", "env only"), ("inference", "env + inference"), ("train", "training"), ("numpy", "NumPy env")]


def _by_count(rows: list[dict]) -> dict[int, dict]:
    return {r["num_envs"]: r for r in rows}


def _rate(row: dict | None) -> str:
    return "—" if row is None else f"{row['agent_steps_per_second']:,.0f}"


def _compile(row: dict | None) -> str:
    return "—" if row is None or row.get("compile_s") is None else f"{row['compile_s']:.1f}"


def _ratio(a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{a['agent_steps_per_second'] / b['agent_steps_per_second']:.1f}×"


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} "


def markdown(result: dict) -> str:
    info = result["machine"]
    cols = {name: _by_count(result["columns"][name]) for name, _ in COLUMNS}
    lines = [
        f"# MobileRobot throughput ({result['mode']} run)",
        "",
        f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} ({', '.join(info['devices'])}), "
        f"JAX {info['jax']}, Python {info['python']}, {info['date']}.",
        f"Policy network: {result['network']} from `{result['config']}`; agent-steps per second, median of timed runs "
        f"after a warm-up; compile times (s) are separate columns.",
        "",
        "| robots | env only | env + inference | training | NumPy env | compile env | compile inf. | compile train |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in result["robot_counts"]:
        e, i, t, p = (cols[c].get(n) for c, _ in COLUMNS)
        lines.append(f"| {n:,} | {_rate(e)} | {_rate(i)} | {_rate(t)} | {_rate(p)} | {_compile(e)} | {_compile(i)} | "
                     f"{_compile(t)} |")
    lines += ["", "JAX env / NumPy env (same scene, uniform random actions in both):", "",
              "| robots | env only / NumPy |", "|---:|---:|"]
    for n in result["robot_counts"]:
        p = cols["numpy"].get(n)
        if p is None:
            continue
        lines.append(f"| {n:,} | {_ratio(cols['env'].get(n), p)} |")
    if result.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{s['column']} at {s['num_envs']:,} robots ({s['why']})"
                                                   for s in result["skipped"]) + "."]
    mm = result["matmul"]
    lines += ["", "## NN-FLOP ceiling", "",
              f"float32 matmul rate: {_si(mm['flops_per_second'])}FLOP/s ({mm['shape']}, {mm['iterations']} iterations "
              f"in one jitted loop, {mm['seconds'] * 1e3:.1f} ms). FLOPs per agent-step = actor forward (acting) + "
              f"2 critic forwards + num_epoch × 3 × (actor + critic forward), forward = 2·Σ fan_in·fan_out.", "",
              "| config | network | robots | NN FLOPs / agent-step | ceiling agent-steps/s | achieved "
              "| achieved / ceiling | compile (s) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in result["ceiling"]:
        lines.append(f"| `{c['config']}` | {c['network']} | {c['num_envs']:,} | {_si(c['flops_per_agent_step'])} | "
                     f"{c['ceiling_agent_steps_per_second']:,.0f} | {c['achieved_agent_steps_per_second']:,.0f} | "
                     f"{c['fraction']:.1%} | {c['compile_s']:.1f} |")
    lines += baseline_lines(result.get("torch"), result.get("sb3"))
    lines += unity_lines(result.get("unity"))
    lines += ["", f"Whole benchmark run: {result.get('wall_s', 0.0):.0f} s."]
    return "\n".join(lines) + "\n"


def baseline_lines(torch_row: dict | None, sb3_row: dict | None) -> list[str]:
    """The training baselines on the fast config, as rlrobot / baseline ratios (nothing when neither ran)."""
    named = [(name, r) for name, r in (("PyTorch PPO-AC", torch_row), ("SB3 PPO", sb3_row)) if r]
    if not named:
        return []
    rows = [(name, r) for name, r in named if "skipped" not in r]
    lines = ["", "## Training baselines (fast config)", ""]
    if rows:
        lines += ["| baseline | config | network | robots × steps | versions | threads | agent-steps/s | rlrobot | "
                  "rlrobot / baseline |", "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for name, r in rows:
        versions = f"torch {r['torch']}" if "torch" in r else f"SB3 {r['sb3']}, gymnasium {r['gymnasium']}"
        ratio = r["rlrobot_agent_steps_per_second"] / r["agent_steps_per_second"]
        lines.append(f"| {name} | `{r['config']}` | {r['network']} | {r['num_envs']} × {r['rollout_steps']} | "
                     f"{versions} | {r['threads']} | {r['agent_steps_per_second']:,.0f} | "
                     f"{r['rlrobot_agent_steps_per_second']:,.0f} | {ratio:.1f}× |")
    notes = [f"{name} not measured: {r['skipped']}." for name, r in named if "skipped" in r]
    return lines + ([""] if rows and notes else []) + notes


def unity_lines(unity: dict | None) -> list[str]:
    """Env-only steps through ML-Agents' protocol (stand-in player) against the JAX env at the same agent counts."""
    if not unity:
        return []
    lines = ["", "## Unity protocol path (env only: mlagents-envs ↔ stand-in player)", ""]
    if "skipped" in unity:
        return lines + [f"Not measured: {unity['skipped']}."]
    versions = ", ".join(f"{k} {v}" for k, v in unity["versions"].items())
    lines += [f"Random actions, {versions}; the player is a separate Python process on the same cores.", "",
              "| agents | protocol agent-steps/s | ms/step | JAX env agent-steps/s | JAX / protocol |",
              "|---:|---:|---:|---:|---:|"]
    for r in unity["rows"]:
        lines.append(f"| {r['num_envs']} | {r['agent_steps_per_second']:,.0f} | "
                     f"{1000.0 / r['env_steps_per_second']:.2f} | "
                     f"{r['jax_agent_steps_per_second']:,.0f} | "
                     f"{r['jax_agent_steps_per_second'] / r['agent_steps_per_second']:,.0f}× |")
    return lines


def plot_throughput(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, label in COLUMNS:
        rows = sorted(result["columns"][name], key=lambda r: r["num_envs"])
        if rows:
            ax.plot([r["num_envs"] for r in rows], [r["agent_steps_per_second"] for r in rows], marker="o",
                    label=label, linestyle="--" if name == "numpy" else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parallel robots")
    ax.set_ylabel("agent-steps / s")
    info = result["machine"]
    ax.set_title(f"MobileRobot throughput — {info['backend']}, {info['cpu']} ({info['cores']} cores)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ceiling(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["ceiling"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["ceiling_agent_steps_per_second"] for r in rows], width=0.4,
           label="NN-FLOP ceiling")
    ax.bar([i + 0.2 for i in x], [r["achieved_agent_steps_per_second"] for r in rows], width=0.4, label="achieved")
    ax.set_xticks(list(x), [f"{os.path.basename(r['config'])}\n{r['network']}, {r['fraction']:.1%}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("training agent-steps / s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out: str) -> str:
    """Write ``results.json``, ``results.md`` and the plots (when matplotlib imports) to ``out``; returns the
    Markdown."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return text + "\n(matplotlib not installed: no plots)\n"
    plot_throughput(result, os.path.join(out, "throughput.png"))
    plot_ceiling(result, os.path.join(out, "ceiling.png"))
    return text
