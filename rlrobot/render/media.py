"""Write frames as a GIF (Pillow), an MP4 (imageio with imageio-ffmpeg) or a PNG still, atomically.

A GIF is built in memory and written with ``checkpoints.atomic_write_bytes``; an MP4 goes to a temporary file beside
the target and is renamed onto it, so a failed write never leaves half a file.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = (".gif", ".mp4", ".png", ".html")


class MediaError(ValueError):
    """An output that cannot be written (an unknown extension, no video encoder); one line."""


def gif_bytes(frames: list[Image.Image], fps: float) -> bytes:
    """An endlessly looping GIF of palette frames (one palette: no quantisation)."""
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                   loop=0, optimize=False)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def mp4_problem() -> str | None:
    """Why an MP4 cannot be written here, or None."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        return (f"writing .mp4 needs imageio and imageio-ffmpeg ({type(error).__name__}: {error}); "
                "install them with: pip install imageio imageio-ffmpeg, or write a .gif")
    return None


def write_mp4(frames: list[Image.Image], path: Path, fps: float) -> Path:
    """H.264 (yuv420p), frames padded with the background to a multiple of 16 pixels."""
    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    width, height = frames[0].size
    pad = ((-height) % 16, (-width) % 16)
    try:
        with warnings.catch_warnings():  # JAX warns on every fork; ffmpeg is a plain subprocess that shares nothing
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=1, quality=7, ffmpeg_log_level="error") as writer:
                for frame in frames:
                    rgb = np.asarray(frame.convert("RGB"))
                    writer.append_data(np.pad(rgb, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write(frames_or_still, path: Path, fps: float) -> Path:
    """Write ``frames`` (.gif, .mp4) or a still image (.png) to ``path``."""
    from rlrobot.checkpoints import atomic_write_bytes

    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return atomic_write_bytes(path, gif_bytes(frames_or_still, fps))
    if suffix == ".png":
        return atomic_write_bytes(path, png_bytes(frames_or_still))
    if suffix == ".mp4":
        return write_mp4(frames_or_still, path, fps)
    raise MediaError(f"{path}: unsupported format {suffix or '(none)'}; use one of {', '.join(FORMATS)}")
