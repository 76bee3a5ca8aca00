"""Several summary periods per device call (``Cadence.periods``, ``JaxTraining``): the same run, fewer calls."""
import json

import pytest
from test_cli import TINY

from rlrobot import runner
from rlrobot.cli import main
from rlrobot.run import Cadence


@pytest.mark.parametrize(("step", "max_periods", "max_iterations", "expected"), [
    (0, 16, 100, [1, 1, 1, 1]),       # summaries every iteration, up to the checkpoint at 2048
    (2048, 16, 100, [1, 1, 1, 1]),    # ... then up to the end
    (0, 2, 100, [1, 1]),              # at most max_periods
    (0, 16, 3, [1, 1, 1]),            # at most max_iterations
    (0, 16, 0, [1]),                  # but always one period
    (3584, 16, 100, [1]),             # the last iteration
])
def test_periods_end_where_the_host_must_save(step, max_periods, max_iterations, expected):
    cadence = Cadence(summary_freq=512, checkpoint_interval=2048, max_steps=4096)
    assert cadence.periods(step, 512, max_periods, max_iterations) == expected


def test_periods_span_several_iterations_and_round_up():
    cadence = Cadence(summary_freq=1000, checkpoint_interval=10_000, max_steps=5000)
    assert cadence.periods(0, 512, 16, 100) == [2, 2, 2, 2, 2]  # steps 1024, 2048, 3072, 4096, 5120
    assert cadence.periods(0, 512, 16, 5) == [2, 2]
    assert Cadence(summary_freq=300, checkpoint_interval=10_000, max_steps=5000).periods(0, 512, 3, 100) == [1, 1, 1]


def _run(tmp_path, monkeypatch, name: str, call_seconds: float) -> tuple[list[dict], int]:
    """A tiny run summing up every iteration; returns its metrics.jsonl lines and its device calls."""
    calls = []
    original = runner.JaxTraining._call

    def counted(self, *args):
        calls.append(args[-1])
        return original(self, *args)

    monkeypatch.setattr(runner, "CALL_SECONDS", call_seconds)
    monkeypatch.setattr(runner.JaxTraining, "_call", counted)
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(max_steps=4096, schedule="linear").replace("summary_freq: 1024", "summary_freq: 512")
                    .replace("checkpoint_interval: 1024", "checkpoint_interval: 2048"))
    assert main([str(path), f"--run-id={name}", "--results-dir", str(tmp_path / "results")]) == 0
    lines = (tmp_path / "results" / name / "MobileRobot" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], len(calls)


def test_a_run_is_the_same_with_several_periods_per_call(tmp_path, monkeypatch):
    together, calls_together = _run(tmp_path, monkeypatch, "together", 60.0)
    apart, calls_apart = _run(tmp_path, monkeypatch, "apart", 0.0)
    assert calls_apart == 8 and calls_together == 3  # one period (timed), 3 up to the checkpoint, 4 to the end
    assert [line["step"] for line in together] == [line["step"] for line in apart] == list(range(512, 4097, 512))
    for a, b in zip(together, apart):
        scalars = {tag for tag in a if tag.split("/")[0] in ("Environment", "Policy", "Losses")}
        assert scalars and {tag: a[tag] for tag in scalars} == {tag: b[tag] for tag in scalars}
        assert a["steps_per_second"] > 0
    checkpoints = [sorted(p.name for p in (tmp_path / "results" / name / "MobileRobot").glob("MobileRobot-*.ckpt"))
                   for name in ("together", "apart")]
    assert checkpoints[0] == checkpoints[1] == ["MobileRobot-2048.ckpt", "MobileRobot-4096.ckpt"]
