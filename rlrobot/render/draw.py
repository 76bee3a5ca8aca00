"""Draw a recording with Pillow: a top-down view of each robot's arena, to scale, laid out in a grid.

Each cell shows the floor, the walls, blocks and goal (``scene.solids``), the trail so far, the 18 sensor rays drawn
to their hit points and coloured by what they hit, the car's body (``envs.car``'s collider) with an arrow for its
heading, and above it the episode, step, reward of the last step and return so far; when the episode is over, its
outcome (goal, penalty, time limit, not finished) in a coloured tag. Frames are palette ("P") images over one fixed
palette, so a GIF needs no colour quantisation: the static parts are drawn once and each frame only adds what moves.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rlrobot.render import scene
from rlrobot.render.record import OUTCOMES, Recording

#: Every colour a frame uses (RGB), in palette order; the HTML viewer uses the same table.
PALETTE: dict[str, tuple[int, int, int]] = {
    "background": (255, 255, 255),
    "header": (244, 244, 242),
    "floor": (237, 233, 221),
    "wall": (74, 85, 104),
    "block": (176, 104, 52),
    "goal": (52, 168, 83),
    "goal_edge": (28, 112, 52),
    "trail": (96, 150, 232),
    "start": (120, 120, 120),
    "ray_nothing": (206, 206, 206),
    "ray_wall": (112, 124, 148),
    "ray_block": (236, 142, 40),
    "ray_goal": (40, 196, 96),
    "car": (33, 99, 196),
    "car_edge": (14, 48, 110),
    "car_nose": (255, 255, 255),
    "penalty": (214, 48, 49),
    "text": (33, 33, 33),
    "goal_tag": (40, 150, 72),
    "time_tag": (104, 104, 104),
    "unfinished_tag": (150, 150, 150),
}
INK = {name: index for index, name in enumerate(PALETTE)}
RAY_INK = tuple(INK[f"ray_{name}"] for name in scene.KIND_NAMES)
OUTCOME_INK = dict(zip(OUTCOMES, (INK["goal_tag"], INK["penalty"], INK["time_tag"], INK["unfinished_tag"])))
_PALETTE_BYTES = bytes(np.asarray(list(PALETTE.values()), np.uint8).ravel())


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) for ``count`` cells: as square as possible, wider than tall."""
    rows = max(1, math.isqrt(count))
    return rows, math.ceil(count / rows)


def arena_bounds(recording: Recording, margin: float = 0.3) -> tuple[float, float, float, float]:
    """``(x_min, z_min, x_max, z_max)`` that holds every robot's walls (or, with no walls, everything drawn)."""
    points = []
    for solids in recording.solids:
        for solid in solids:
            if solid.kind == scene.WALL:
                points.append(scene.box_corners(solid.center, solid.size, solid.forward))
    if not points:
        points = [recording.pos.reshape(-1, 2)]
        for solids in recording.solids:
            points += [np.asarray(s.center)[None] + np.asarray(s.size)[None] * sign for s in solids for sign in (-1, 1)]
    xz = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in points])
    (x0, z0), (x1, z1) = xz.min(0) - margin, xz.max(0) + margin
    return float(x0), float(z0), float(x1), float(z1)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font
        return ImageFont.load_default()


class Glyphs:
    """Text in one font, each character rasterised once by FreeType and then pasted: a frame's status line costs a
    fifth of ``ImageDraw.text`` (which lays out and rasterises the whole string every time)."""

    def __init__(self, size: int) -> None:
        self.font = font(size)
        self.cache: dict[str, tuple[Image.Image, float]] = {}

    def _glyph(self, char: str) -> tuple[Image.Image, float]:
        glyph = self.cache.get(char)
        if glyph is None:
            right, bottom = self.font.getbbox(char)[2:]
            size = self.font.size  # room beyond the box: a glyph's ink may reach past it
            mask = Image.new("1", (int(right) + size, int(bottom) + size))
            pen = ImageDraw.Draw(mask)
            pen.fontmode = "1"
            pen.text((0, 0), char, fill=1, font=self.font)
            advance = self.font.getlength(char)
            if char == " ":  # the small default font's space is narrow: a third of the size reads better
                advance = max(advance, self.font.size / 3)
            glyph = self.cache[char] = (mask, advance)
        return glyph

    def width(self, text: str) -> float:
        return sum(self._glyph(char)[1] for char in text)

    def draw(self, image: Image.Image, xy: tuple[float, float], text: str, ink: int) -> None:
        x, y = xy
        for char in text:
            mask, advance = self._glyph(char)
            if char != " ":
                image.paste(ink, (round(x), round(y)), mask)
            x += advance


@dataclass(frozen=True)
class Layout:
    """Where robot k's cell is and how arena metres map to its pixels (x right, z up)."""

    rows: int
    columns: int
    cell: int          # cell width = arena square side, pixels
    header: int        # text band above each arena, pixels
    bounds: tuple[float, float, float, float]
    scale: float       # pixels per metre
    footer: int = 0    # legend band below the grid, pixels

    @classmethod
    def of(cls, recording: Recording, cell: int) -> Layout:
        rows, columns = grid_shape(recording.episodes)
        bounds = arena_bounds(recording)
        pad = max(2, cell // 60)
        scale = (cell - 2 * pad) / max(bounds[2] - bounds[0], bounds[3] - bounds[1])
        return cls(rows, columns, cell, header=2 * max(10, cell // 20) + 3 * pad, bounds=bounds, scale=scale)

    @property
    def size(self) -> tuple[int, int]:
        return self.columns * self.cell, self.rows * (self.cell + self.header) + self.footer

    def corner(self, k: int) -> tuple[int, int]:
        """Top-left pixel of robot k's cell (its header band)."""
        return (k % self.columns) * self.cell, (k // self.columns) * (self.cell + self.header)

    def to_pixels(self, k: int, xz: np.ndarray) -> np.ndarray:
        """Arena coordinates ``[..., 2]`` → pixel coordinates ``[..., 2]`` in robot k's cell."""
        left, top = self.corner(k)
        x0, z0, x1, z1 = self.bounds
        width, height = (x1 - x0) * self.scale, (z1 - z0) * self.scale
        ox, oy = left + (self.cell - width) / 2, top + self.header + (self.cell - height) / 2
        xz = np.asarray(xz, np.float64)
        return np.stack([ox + (xz[..., 0] - x0) * self.scale, oy + (z1 - xz[..., 1]) * self.scale], -1)

    def to_arena(self, k: int, pixels: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_pixels` (for tests)."""
        origin = self.to_pixels(k, np.asarray([self.bounds[0], self.bounds[3]]))
        pixels = np.asarray(pixels, np.float64)
        return np.stack([self.bounds[0] + (pixels[..., 0] - origin[0]) / self.scale,
                         self.bounds[3] - (pixels[..., 1] - origin[1]) / self.scale], -1)


def _points(pixels: np.ndarray) -> list[float]:
    """Pixel points as Pillow takes them fastest: a flat list ``[x0, y0, x1, y1, ...]``."""
    return np.asarray(pixels, np.float64).ravel().tolist()


class Painter:
    """Frames of a recording: ``frame(t)`` is every arena at step t (an episode that ended shows its last step)."""

    def __init__(self, recording: Recording, cell: int = 240) -> None:
        self.recording = recording
        self.layout = layout = Layout.of(recording, cell)
        self.text = Glyphs(max(9, cell // 22))
        self.legend = self._legend_rows()
        self.layout = layout = dataclasses.replace(layout, footer=len(self.legend) * self._legend_line + 4)
        self.line = max(1, round(cell / 200))
        origin, ends = scene.ray_segments(recording.pos, recording.yaw, recording.ray_distance,
                                          recording.sensor_behind, recording.ray_length)
        bodies = scene.car_body(recording.pos, recording.yaw)  # [F, K, 4, 2]
        forward = scene.heading(recording.yaw)
        nose = bodies[..., 2:4, :].mean(-2)  # the front edge's midpoint
        back = recording.pos + 0.05 * forward
        side = np.stack([forward[..., 1], -forward[..., 0]], -1) * 0.3
        arrow = np.stack([nose, back + side, back - side], -2)  # [F, K, 3, 2]
        k = np.arange(recording.episodes)
        self.px = {name: np.stack([layout.to_pixels(i, value[:, i]) for i in k], 1)
                   for name, value in (("pos", recording.pos), ("origin", origin), ("ends", ends), ("body", bodies),
                                       ("arrow", arrow))}
        self.returns = recording.returns()
        self.background = self._background()

    def _image(self) -> Image.Image:
        image = Image.new("P", self.layout.size, INK["background"])
        image.putpalette(_PALETTE_BYTES)
        return image

    def _background(self) -> Image.Image:
        image = self._image()
        draw = ImageDraw.Draw(image)
        layout = self.layout
        x0, z0, x1, z1 = layout.bounds
        for k, solids in enumerate(self.recording.solids):
            left, top = layout.corner(k)
            draw.rectangle([left, top, left + layout.cell - 1, top + layout.header - 1], fill=INK["header"])
            pad = max(2, layout.cell // 60)
            self.text.draw(image, (left + pad, top + pad), self.recording.label(k), INK["text"])
            floor = layout.to_pixels(k, np.asarray([[x0, z1], [x1, z0]]))
            draw.rectangle(_points(floor), fill=INK["floor"])
            for solid in sorted(solids, key=lambda s: s.kind):
                if solid.circle:
                    c = layout.to_pixels(k, solid.center)
                    r = float(solid.size[0]) * layout.scale
                    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=INK["goal"], outline=INK["goal_edge"])
                    continue
                corners = _points(layout.to_pixels(k, scene.box_corners(solid.center, solid.size, solid.forward)))
                fill = {scene.WALL: "wall", scene.BLOCK: "block", scene.GOAL: "goal"}[solid.kind]
                draw.polygon(corners, fill=INK[fill], outline=INK["goal_edge"] if solid.kind == scene.GOAL else None)
            start = self.px["pos"][0, k]
            r = max(2, self.line * 3)
            draw.ellipse([start[0] - r, start[1] - r, start[0] + r, start[1] + r], outline=INK["start"],
                         width=self.line)
        self._legend(image, draw)
        return image

    @property
    def _legend_line(self) -> int:
        return self.text.font.size + 6

    def _legend_rows(self) -> list[list[tuple[str | None, str, float]]]:
        """The legend's entries ``(ink or None for plain text, label, x)``, wrapped into rows that fit the width."""
        entries = [(None, "rays hit:"), ("ray_wall", "wall"), ("ray_block", "block"), ("ray_goal", "goal"),
                   ("ray_nothing", "nothing"), ("penalty", "penalty step"), ("trail", "trail")]
        width, swatch = self.layout.columns * self.layout.cell, self.text.font.size
        rows, x = [[]], 4.0
        for ink, label in entries:
            needed = (swatch + 3 if ink else 0) + self.text.width(label)
            if rows[-1] and x + needed > width - 4:
                rows.append([])
                x = 4.0
            rows[-1].append((ink, label, x))
            x += needed + self.text.width("   ")
        return rows

    def _legend(self, image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
        """Below the grid: what the rays' colours, the red dots and the blue line mean."""
        layout = self.layout
        top = layout.rows * (layout.cell + layout.header)
        draw.rectangle([0, top, layout.size[0] - 1, layout.size[1] - 1], fill=INK["header"])
        swatch = self.text.font.size
        for row, entries in enumerate(self.legend):
            y = top + 2 + row * self._legend_line + 3
            for ink, label, x in entries:
                if ink is not None:
                    draw.rectangle([x, y + 2, x + swatch - 2, y + swatch], fill=INK[ink])
                    x += swatch + 3
                self.text.draw(image, (x, y), label, INK["text"])

    def frame(self, t: int, trail_from: int = 0) -> Image.Image:
        """Every arena at step ``t`` (clamped to each episode's length)."""
        image = self.background.copy()
        draw = ImageDraw.Draw(image)
        for k in range(self.recording.episodes):
            self._robot(draw, k, min(t, int(self.recording.length[k])), trail_from)
            self._text(image, draw, k, min(t, int(self.recording.length[k])))
        return image

    def _robot(self, draw: ImageDraw.ImageDraw, k: int, t: int, trail_from: int) -> None:
        rec, px, line = self.recording, self.px, self.line
        if t > trail_from:
            draw.line(_points(px["pos"][trail_from:t + 1, k]), fill=INK["trail"], width=line + 1, joint="curve")
        marks = np.flatnonzero(rec.penalty[1:t + 1, k]) + 1
        r = max(2, line * 2)
        for x, y in px["pos"][marks, k].tolist():
            draw.ellipse([x - r, y - r, x + r, y + r], fill=INK["penalty"])
        x0, y0 = px["origin"][t, k].tolist()
        for (x, y), kind in zip(px["ends"][t, k].tolist(), rec.ray_kind[t, k].tolist()):
            draw.line([x0, y0, x, y], fill=RAY_INK[kind], width=line)
            if kind != scene.NOTHING:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=RAY_INK[kind])
        draw.polygon(_points(px["body"][t, k]), fill=INK["car"], outline=INK["car_edge"])
        draw.polygon(_points(px["arrow"][t, k]), fill=INK["car_nose"])

    def _text(self, image: Image.Image, draw: ImageDraw.ImageDraw, k: int, t: int) -> None:
        rec, layout = self.recording, self.layout
        left, top = layout.corner(k)
        pad = max(2, layout.cell // 60)
        height = (layout.header - 3 * pad) // 2
        status = f"step {t}  reward {rec.reward[t, k]:+.3f}  return {self.returns[t, k]:+.2f}"
        self.text.draw(image, (left + pad, top + 2 * pad + height), status, INK["text"])
        if t >= rec.length[k]:
            text = rec.outcome_name(k).upper()
            width = self.text.width(text)
            x, y = left + layout.cell - 3 * pad - width, top + pad
            draw.rectangle([x, y, x + width + 2 * pad, y + height + pad], fill=OUTCOME_INK[rec.outcome_name(k)])
            self.text.draw(image, (x + pad, y), text, INK["background"])

    def still(self) -> Image.Image:
        """Every whole trajectory: the last frame, where every episode is over and its whole trail drawn."""
        return self.frame(self.recording.frames - 1)

    def frames(self, stride: int = 1) -> list[Image.Image]:
        """Frames 0, stride, 2·stride, … and always the last one."""
        steps = list(range(0, self.recording.frames, max(1, stride)))
        if steps[-1] != self.recording.frames - 1:
            steps.append(self.recording.frames - 1)
        return [self.frame(t) for t in steps]
