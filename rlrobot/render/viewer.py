"""The HTML viewer: one self-contained file (data, script and style inline; no network) that works from disk.

The recording goes in as JSON with every shape already in arena coordinates (car bodies, heading arrows, ray
segments: computed here with ``scene``'s helpers, the same as the frames Pillow draws), so the page's script only
draws polygons and lines on a canvas. Controls: play/pause, step back/forward, speed, a scrub bar, an episode
selector (all episodes in a grid, or one), and a reward-per-step chart with the current step marked. Keys: space
plays/pauses, ←/→ step. ``window.rlrobotViewer`` exposes the state (for tests).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from rlrobot.render import scene
from rlrobot.render.draw import PALETTE, arena_bounds, grid_shape
from rlrobot.render.record import Recording


def _rounded(array: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(array, np.float64), digits).tolist()


def _solid(solid: scene.Solid) -> dict:
    if solid.circle:
        return {"kind": scene.KIND_NAMES[solid.kind], "center": _rounded(solid.center), "radius": round(float(
            solid.size[0]), 3)}
    return {"kind": scene.KIND_NAMES[solid.kind],
            "corners": _rounded(scene.box_corners(solid.center, solid.size, solid.forward))}


def viewer_data(recording: Recording, fps: float, title: str) -> dict:
    """Everything the page draws, per episode cut to its own length."""
    origin, ends = scene.ray_segments(recording.pos, recording.yaw, recording.ray_distance, recording.sensor_behind,
                                      recording.ray_length)
    bodies = scene.car_body(recording.pos, recording.yaw)
    forward = scene.heading(recording.yaw)
    nose = bodies[..., 2:4, :].mean(-2)
    back = recording.pos + 0.05 * forward
    side = np.stack([forward[..., 1], -forward[..., 0]], -1) * 0.3
    arrows = np.stack([nose, back + side, back - side], -2)
    returns = recording.returns()
    episodes = []
    for k in range(recording.episodes):
        n = int(recording.length[k]) + 1
        episodes.append({
            "label": recording.label(k), "length": n - 1, "outcome": recording.outcome_name(k),
            "solids": [_solid(s) for s in sorted(recording.solids[k], key=lambda s: s.kind)],
            "pos": _rounded(recording.pos[:n, k]), "body": _rounded(bodies[:n, k]), "arrow": _rounded(arrows[:n, k]),
            "origin": _rounded(origin[:n, k]), "ends": _rounded(ends[:n, k]),
            "kinds": ["".join(map(str, row)) for row in recording.ray_kind[:n, k].tolist()],
            "reward": _rounded(recording.reward[:n, k], 4), "return": _rounded(returns[:n, k], 4),
            "penalty": recording.penalty[:n, k].astype(int).tolist()})
    rows, columns = grid_shape(recording.episodes)
    return {"title": title, "scene": recording.scene, "fps": fps, "bounds": list(arena_bounds(recording)),
            "rows": rows, "columns": columns, "frames": recording.frames,
            "palette": {name: "#{:02x}{:02x}{:02x}".format(*rgb) for name, rgb in PALETTE.items()},
            "kinds": list(scene.KIND_NAMES), "episodes": episodes}


def viewer_html(recording: Recording, fps: float = 10.0, title: str = "rlrobot") -> str:
    data = json.dumps(viewer_data(recording, fps, title), separators=(",", ":"), allow_nan=False)
    data = data.replace("</", "<\\/")  # nothing in the JSON may close the script element
    return (_TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data))


def write_viewer(recording: Recording, path: Path, fps: float = 10.0, title: str = "rlrobot") -> Path:
    from rlrobot.checkpoints import atomic_write_bytes

    return atomic_write_bytes(path, viewer_html(recording, fps, title).encode("utf-8"))


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 12px; color: #222; background: #fafafa; }
  h1 { font-size: 16px; margin: 0 0 8px; }
  #controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 8px; }
  #controls button { min-width: 2.6em; }
  #scrub { flex: 1 1 240px; }
  #stepLabel { font-variant-numeric: tabular-nums; min-width: 8em; }
  canvas { display: block; background: #fff; border: 1px solid #ddd; max-width: 100%; }
  #legend { margin: 6px 0; font-size: 12px; }
  #legend span { display: inline-block; margin-right: 12px; }
  #legend i { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="controls">
  <button id="play" title="play / pause (space)">&#9654;</button>
  <button id="prev" title="step back (&#8592;)">&#9664;&#9646;</button>
  <button id="next" title="step forward (&#8594;)">&#9646;&#9654;</button>
  <label>speed <select id="speed">
    <option value="0.25">0.25&times;</option><option value="0.5">0.5&times;</option>
    <option value="1" selected>1&times;</option><option value="2">2&times;</option>
    <option value="4">4&times;</option><option value="8">8&times;</option></select></label>
  <input id="scrub" type="range" min="0" max="0" value="0" step="1" aria-label="step">
  <span id="stepLabel"></span>
  <label>episode <select id="episode"></select></label>
</div>
<canvas id="arena"></canvas>
<div id="legend"></div>
<canvas id="chart" height="160"></canvas>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const P = D.palette;
  const RAY = D.kinds.map(function (k) { return P["ray_" + k]; });
  const TAG = {"goal": P.goal_tag, "penalty": P.penalty, "time limit": P.time_tag, "not finished": P.unfinished_tag};
  const SERIES = ["#2163c4", "#d62f31", "#2a9648", "#b0682f", "#7d4cc2", "#1f9aa8", "#c2417f", "#6b6b6b"];
  const arena = document.getElementById("arena"), chart = document.getElementById("chart");
  const scrub = document.getElementById("scrub"), label = document.getElementById("stepLabel");
  const play = document.getElementById("play"), speed = document.getElementById("speed");
  const select = document.getElementById("episode");
  const view = {step: 0, playing: false, episode: -1, frames: 0, ready: false, drawn: 0};
  window.rlrobotViewer = view;

  const opt = document.createElement("option");
  opt.value = "-1"; opt.textContent = "all (" + D.episodes.length + ")"; select.appendChild(opt);
  D.episodes.forEach(function (e, i) {
    const o = document.createElement("option");
    o.value = String(i); o.textContent = e.label + " (" + e.outcome + ")"; select.appendChild(o);
  });
  document.getElementById("legend").innerHTML = ["wall", "block", "goal", "nothing"].map(function (k) {
    return '<span><i style="background:' + P["ray_" + k] + '"></i>ray hits ' + k + "</span>";
  }).join("") + '<span><i style="background:' + P.penalty + ';border-radius:6px"></i>penalty step</span>' +
    '<span><i style="background:' + P.trail + '"></i>trail</span>';

  function shown() { return view.episode < 0 ? D.episodes.map(function (e, i) { return i; }) : [view.episode]; }
  function frameCount() {
    return 1 + Math.max.apply(null, shown().map(function (i) { return D.episodes[i].length; }));
  }

  const B = D.bounds, W = B[2] - B[0], H = B[3] - B[1];
  function setup(canvas, width, height) {
    const r = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * r); canvas.height = Math.round(height * r);
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    const g = canvas.getContext("2d"); g.setTransform(r, 0, 0, r, 0, 0); return g;
  }
  function poly(g, pts, fill, stroke, px) {
    g.beginPath(); g.moveTo(px(pts[0])[0], px(pts[0])[1]);
    for (let i = 1; i < pts.length; i++) { const p = px(pts[i]); g.lineTo(p[0], p[1]); }
    g.closePath();
    if (fill) { g.fillStyle = fill; g.fill(); }
    if (stroke) { g.strokeStyle = stroke; g.lineWidth = 1; g.stroke(); }
  }
  function dot(g, p, r, color) { g.beginPath(); g.arc(p[0], p[1], r, 0, 2 * Math.PI); g.fillStyle = color; g.fill(); }

  function drawCell(g, e, left, top, size, header) {
    const t = Math.min(view.step, e.length);
    const scale = (size - 8) / Math.max(W, H);
    const ox = left + (size - W * scale) / 2, oy = top + header + (size - H * scale) / 2;
    const px = function (p) { return [ox + (p[0] - B[0]) * scale, oy + (B[3] - p[1]) * scale]; };
    g.fillStyle = P.header; g.fillRect(left, top, size, header);
    g.fillStyle = P.floor; g.fillRect(ox, oy, W * scale, H * scale);
    e.solids.forEach(function (s) {
      if (s.radius !== undefined) {
        const c = px(s.center); g.beginPath(); g.arc(c[0], c[1], s.radius * scale, 0, 2 * Math.PI);
        g.fillStyle = P.goal; g.fill(); g.strokeStyle = P.goal_edge; g.stroke();
      } else {
        poly(g, s.corners, P[s.kind], s.kind === "goal" ? P.goal_edge : null, px);
      }
    });
    const start = px(e.pos[0]);
    g.beginPath(); g.arc(start[0], start[1], 3, 0, 2 * Math.PI); g.strokeStyle = P.start; g.lineWidth = 1; g.stroke();
    if (t > 0) {
      g.beginPath(); g.moveTo(start[0], start[1]);
      for (let i = 1; i <= t; i++) { const p = px(e.pos[i]); g.lineTo(p[0], p[1]); }
      g.strokeStyle = P.trail; g.lineWidth = 2; g.lineJoin = "round"; g.stroke();
    }
    for (let i = 1; i <= t; i++) { if (e.penalty[i]) { dot(g, px(e.pos[i]), 2.5, P.penalty); } }
    const o = px(e.origin[t]), kinds = e.kinds[t];
    g.lineWidth = 1;
    e.ends[t].forEach(function (end, r) {
      const k = +kinds[r], p = px(end);
      g.beginPath(); g.moveTo(o[0], o[1]); g.lineTo(p[0], p[1]); g.strokeStyle = RAY[k]; g.stroke();
      if (k !== 0) { dot(g, p, 2, RAY[k]); }
    });
    poly(g, e.body[t], P.car, P.car_edge, px);
    poly(g, e.arrow[t], P.car_nose, null, px);
    const fs = Math.min(16, Math.max(10, Math.round(size / 22)));
    g.font = fs + "px system-ui, sans-serif"; g.fillStyle = P.text; g.textBaseline = "top";
    g.fillText(e.label, left + 4, top + 3);
    g.fillText("step " + t + "  reward " + sign(e.reward[t], 3) + "  return " + sign(e["return"][t], 2),
               left + 4, top + 6 + fs);
    if (view.step >= e.length) {
      const text = e.outcome.toUpperCase(), w = g.measureText(text).width + 8;
      g.fillStyle = TAG[e.outcome]; g.fillRect(left + size - w - 4, top + 3, w, fs + 4);
      g.fillStyle = P.background; g.fillText(text, left + size - w, top + 5);
    }
  }
  function sign(x, d) { return (x >= 0 ? "+" : "") + x.toFixed(d); }

  function drawArena() {
    const list = shown(), columns = view.episode < 0 ? D.columns : 1, rows = view.episode < 0 ? D.rows : 1;
    const avail = Math.max(320, Math.min(window.innerWidth - 40, 1200));
    const size = Math.floor(Math.min(avail / columns, view.episode < 0 ? 320 : 560));
    const header = Math.min(16, Math.max(10, Math.round(size / 22))) * 2 + 12;
    const g = setup(arena, columns * size, rows * (size + header));
    g.fillStyle = P.background; g.fillRect(0, 0, columns * size, rows * (size + header));
    list.forEach(function (i, n) {
      drawCell(g, D.episodes[i], (n % columns) * size, Math.floor(n / columns) * (size + header), size, header);
    });
  }

  function drawChart() {
    const width = parseInt(arena.style.width, 10) || 640, height = 160;
    const g = setup(chart, width, height);
    g.fillStyle = "#fff"; g.fillRect(0, 0, width, height);
    const list = shown(), n = frameCount();
    let lo = 0, hi = 0;
    list.forEach(function (i) {
      D.episodes[i].reward.forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    });
    if (hi - lo < 1e-6) { hi = lo + 1; }
    const l = 48, r = 8, tp = 18, bt = 22;
    const x = function (s) { return l + (width - l - r) * (n > 1 ? s / (n - 1) : 0); };
    const y = function (v) { return tp + (height - tp - bt) * (hi - v) / (hi - lo); };
    g.strokeStyle = "#bbb"; g.lineWidth = 1;
    g.beginPath(); g.moveTo(l, y(0)); g.lineTo(width - r, y(0)); g.stroke();
    g.fillStyle = "#444"; g.font = "11px system-ui, sans-serif"; g.textBaseline = "middle";
    g.fillText(sign(hi, 2), 2, y(hi)); g.fillText(sign(lo, 2), 2, y(lo));
    if (Math.min(Math.abs(y(0) - y(lo)), Math.abs(y(0) - y(hi))) > 12) { g.fillText("0", 2, y(0)); }
    g.textBaseline = "top"; g.fillText("reward per step", l, 2);
    g.fillText("step " + (n - 1), width - r - 60, height - 14);
    list.forEach(function (i, m) {
      const e = D.episodes[i], color = list.length === 1 ? P.car : SERIES[m % SERIES.length];
      g.beginPath();
      for (let s = 1; s <= e.length; s++) {
        if (s === 1) { g.moveTo(x(s), y(e.reward[s])); } else { g.lineTo(x(s), y(e.reward[s])); }
      }
      g.strokeStyle = color; g.lineWidth = 1.5; g.stroke();
      if (view.step >= 1 && view.step <= e.length) { dot(g, [x(view.step), y(e.reward[view.step])], 3, color); }
    });
    g.strokeStyle = P.penalty; g.lineWidth = 1;
    g.beginPath(); g.moveTo(x(view.step), tp - 4); g.lineTo(x(view.step), height - bt + 4); g.stroke();
  }

  function render() {
    view.frames = frameCount();
    view.step = Math.max(0, Math.min(view.step, view.frames - 1));
    scrub.max = String(view.frames - 1); scrub.value = String(view.step);
    label.textContent = "step " + view.step + " / " + (view.frames - 1);
    play.innerHTML = view.playing ? "&#10074;&#10074;" : "&#9654;";
    drawArena(); drawChart(); view.drawn++;
  }
  function go(step) { view.step = step; render(); }
  function toggle() {
    if (!view.playing && view.step >= view.frames - 1) { view.step = 0; }
    view.playing = !view.playing; last = null; render();
  }
  let last = null, carry = 0;
  function tick(now) {
    if (view.playing) {
      if (last !== null) {
        carry += (now - last) / 1000 * D.fps * parseFloat(speed.value);
        const whole = Math.floor(carry);
        if (whole > 0) {
          carry -= whole;
          if (view.step + whole >= view.frames - 1) { view.step = view.frames - 1; view.playing = false; }
          else { view.step += whole; }
          render();
        }
      }
      last = now;
    } else { last = null; carry = 0; }
    window.requestAnimationFrame(tick);
  }
  play.addEventListener("click", toggle);
  document.getElementById("prev").addEventListener("click", function () { view.playing = false; go(view.step - 1); });
  document.getElementById("next").addEventListener("click", function () { view.playing = false; go(view.step + 1); });
  scrub.addEventListener("input", function () { view.playing = false; go(parseInt(scrub.value, 10)); });
  select.addEventListener("change", function () { view.episode = parseInt(select.value, 10); render(); });
  window.addEventListener("resize", render);
  document.addEventListener("keydown", function (ev) {
    if (ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT") { return; }
    if (ev.key === " ") { ev.preventDefault(); toggle(); }
    else if (ev.key === "ArrowRight") { view.playing = false; go(view.step + 1); }
    else if (ev.key === "ArrowLeft") { view.playing = false; go(view.step - 1); }
  });
  render();
  view.ready = true;
  window.requestAnimationFrame(tick);
})();
</script>
</body>
</html>
"""
