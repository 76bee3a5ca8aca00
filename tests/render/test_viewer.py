"""The HTML viewer in a real headless Chromium (Debian's, driven by Playwright): it loads from disk with no network,
draws, plays (frames advance), steps, scrubs and switches episodes, with no console error."""
from __future__ import annotations

import json

import pytest

from rlrobot.render.viewer import viewer_data, write_viewer


def test_viewer_data_is_each_episode_cut_to_its_length(recording_19):
    data = viewer_data(recording_19, fps=10.0, title="t")
    json.dumps(data, allow_nan=False)
    for k, episode in enumerate(data["episodes"]):
        n = int(recording_19.length[k]) + 1
        assert episode["length"] == n - 1 and episode["outcome"] == recording_19.outcome_name(k)
        assert len(episode["pos"]) == len(episode["ends"]) == len(episode["kinds"]) == len(episode["reward"]) == n
        assert len(episode["ends"][0]) == 18 and len(episode["kinds"][0]) == 18


@pytest.fixture
def page(chromium, tmp_path, recording_19):
    from playwright.sync_api import sync_playwright

    path = write_viewer(recording_19, tmp_path / "viewer.html", fps=20.0, title="test")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900})
            requests, errors = [], []
            context.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(path.as_uri())
            page.wait_for_function("window.rlrobotViewer && window.rlrobotViewer.ready", timeout=10_000)
            yield page, requests, errors
        finally:
            browser.close()


def state(page) -> dict:
    return page.evaluate("({step: rlrobotViewer.step, playing: rlrobotViewer.playing, frames: rlrobotViewer.frames,"
                         " episode: rlrobotViewer.episode})")


def test_viewer_plays_steps_scrubs_and_switches_episodes(page, recording_19):
    page, requests, errors = page
    assert state(page) == {"step": 0, "playing": False, "frames": recording_19.frames, "episode": -1}
    # The arena canvas has been drawn: some pixels are neither white nor transparent.
    painted = page.evaluate("""() => { const c = document.getElementById('arena');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) { if (d[i + 3] && (d[i] < 200 || d[i + 1] < 200)) { n++; } }
        return n; }""")
    assert painted > 1000
    page.click("#play")
    page.wait_for_function("rlrobotViewer.step >= 3", timeout=5_000)
    page.click("#play")  # pause
    paused = state(page)
    assert not paused["playing"]
    page.wait_for_timeout(200)
    assert state(page)["step"] == paused["step"]
    page.click("#next")
    assert state(page)["step"] == paused["step"] + 1
    page.keyboard.press("ArrowLeft")
    assert state(page)["step"] == paused["step"]
    page.eval_on_selector("#scrub", "e => { e.value = '5'; e.dispatchEvent(new Event('input')); }")
    assert state(page)["step"] == 5 and page.inner_text("#stepLabel") == f"step 5 / {recording_19.frames - 1}"
    page.select_option("#episode", "1")
    assert state(page)["episode"] == 1 and state(page)["frames"] == int(recording_19.length[1]) + 1
    page.select_option("#speed", "8")
    page.click("#play")  # plays to the end of the episode and stops there
    page.wait_for_function("!rlrobotViewer.playing", timeout=10_000)
    assert state(page)["step"] == int(recording_19.length[1])
    assert errors == []
    assert all(url.startswith("file://") for url in requests), requests
