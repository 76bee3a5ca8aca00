"""``rlrobot-render``: every output format from Unity's own policies; bad input is one error line, exit code 2 and
nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from render_helpers import EPISODES, MAX_STEPS, POLICY_19, POLICY_22, SEED

from rlrobot.render import cli
from rlrobot.render.draw import INK

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--episodes", str(EPISODES), "--max-steps", str(MAX_STEPS), "--seed", str(SEED), "--size", "160"]


def render(*args: str) -> int:
    return cli.main([*map(str, args)])


def test_gif_png_and_html_of_unity_policy(tmp_path, capsys, recording_19):
    for suffix in ("gif", "png", "html"):
        assert render(POLICY_19, *ARGS, "-o", tmp_path / f"out.{suffix}") == 0
    out = capsys.readouterr().out
    assert out.count("[INFO] Wrote ") == 3 and "episodes of MobileRobot (goal in" in out
    with Image.open(tmp_path / "out.gif") as gif:
        # Frame 0 plus one per step of the longest episode: the same episodes as the recording fixture.
        assert gif.n_frames == recording_19.frames
        assert gif.size[0] == 2 * 160  # four arenas in a 2 x 2 grid
    with Image.open(tmp_path / "out.png") as png:
        assert png.size[0] == 2 * 160
    page = (tmp_path / "out.html").read_text()
    assert "http://" not in page and "https://" not in page and '"scene":"MobileRobot"' in page


def test_the_obstacle_course_policy_draws_in_its_scene(tmp_path, capsys):
    assert render(POLICY_22, "--episodes", "2", "--max-steps", "12", "--size", "128", "--deterministic",
                  "-o", tmp_path / "s7.png") == 0
    assert "episodes of MobileRobotObstacles" in capsys.readouterr().out
    with Image.open(tmp_path / "s7.png") as png:
        pixels = np.asarray(png)
    assert (pixels == INK["block"]).sum() > 2 * 40 and (pixels == INK["goal"]).sum() > 2 * 10


def test_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="writing .mp4 needs imageio-ffmpeg (the render extra)")
    assert render(POLICY_19, *ARGS, "-o", tmp_path / "out.mp4") == 0
    assert (tmp_path / "out.mp4").read_bytes()[4:8] == b"ftyp"


BAD = [
    (["missing.onnx", "-o", "{tmp}/o.gif"], "missing.onnx: no such file or folder"),
    ([POLICY_19, "-o", "{tmp}/o.jpg"], "unsupported format .jpg"),
    ([POLICY_19, "-o", "{tmp}/o"], "unsupported format (no extension)"),
    ([POLICY_19, "-o", "{tmp}/nowhere/o.gif"], "does not exist"),
    ([POLICY_19, "--scene", "Nowhere", "-o", "{tmp}/o.gif"], "--scene Nowhere: unknown scene"),
    ([POLICY_19, "--scene", "MobileRobotObstacles", "-o", "{tmp}/o.gif"], "takes 19 observations"),
    ([POLICY_19, "--episodes", "0", "-o", "{tmp}/o.gif"], "--episodes 0: must be between 1 and 64"),
    ([POLICY_19, "--max-steps", "0", "-o", "{tmp}/o.gif"], "--max-steps 0"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "not-a-policy.onnx").write_text("hello")
    assert render(*[str(a).format(tmp=tmp_path) for a in args]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[ERROR] ") and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-policy.onnx"]


def test_a_file_that_is_no_policy_and_a_missing_encoder(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.onnx").write_text("hello")
    assert render(tmp_path / "bad.onnx", "-o", tmp_path / "o.gif") == 2
    assert capsys.readouterr().out.startswith(f"[ERROR] {tmp_path / 'bad.onnx'}: not an ONNX file")
    from rlrobot.render import media

    monkeypatch.setattr(media, "mp4_problem", lambda: "writing .mp4 needs imageio-ffmpeg")
    assert render(POLICY_19, "-o", tmp_path / "o.mp4") == 2
    assert capsys.readouterr().out.strip() == f"[ERROR] -o {tmp_path / 'o.mp4'}: writing .mp4 needs imageio-ffmpeg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_validate_renders_the_episodes_it_counted(tmp_path, capsys):
    """With a curriculum's last lessons (random spawns and headings, drawn per robot by a wrapper scene)."""
    from rlrobot.validate import main as validate

    out, table = tmp_path / "validation.html", tmp_path / "validation.json"
    assert validate([str(POLICY_19), "--episodes", str(EPISODES), "--max-steps", str(MAX_STEPS), "--seed", str(SEED),
                     "--env-parameters", str(REPO / "configs" / "MobileRobot-randomized.yaml"),
                     "--render", str(out), "--json", str(table)]) == 0
    assert f"[INFO] Wrote {out}: the first {EPISODES} validation episodes." in capsys.readouterr().out
    page = out.read_text()
    start = '<script id="data" type="application/json">'
    data = json.loads(page[page.index(start) + len(start):page.index("</script>")].replace("<\\/", "</"))
    summary = json.loads(table.read_text())["columns"]["JAX sim"]
    finished = [episode for episode in data["episodes"] if episode["outcome"] != "not finished"]
    assert len(data["episodes"]) - len(finished) == summary["unfinished"]  # validation counts finished ones only
    assert np.mean([e["length"] for e in finished]) == pytest.approx(summary["mean_length"])
    assert np.mean([e["return"][-1] for e in finished]) == pytest.approx(summary["mean_return"], abs=1e-3)
    starts = {tuple(episode["pos"][0]) for episode in data["episodes"]}
    assert len(starts) == EPISODES  # random spawns: not the course's fixed spots


def test_validate_refuses_a_bad_render_before_validating(tmp_path, capsys):
    from rlrobot.validate import main as validate

    assert validate([str(POLICY_19), "--render", str(tmp_path / "v.bmp"), "--json", str(tmp_path / "v.json")]) == 2
    assert capsys.readouterr().out.strip() == (f"[ERROR] --render {tmp_path / 'v.bmp'}: unsupported format .bmp; use "
                                               ".gif, .mp4, .png, .html")
    assert not list(tmp_path.iterdir())
