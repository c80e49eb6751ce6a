"""A delivered video's poster frame: a small JPEG from the video itself (never the input image), for the UI."""

from __future__ import annotations

import io
from pathlib import Path

POSTER_WIDTH = 192  # pixels: a few KB, so each shot's event stays small in Dagster's event log
POSTER_QUALITY = 70


def poster_jpeg(path: Path, at_seconds: float = 1.0, width: int = POSTER_WIDTH) -> bytes:
    """The first frame at or after `at_seconds` (the first frame of a shorter video), scaled to `width`;
    ValueError when the file gives none."""
    import av  # here, not at the top: see the README's note on PyAV

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # one decoding thread: FFmpeg's slice threads, started for every video opened, cost more than they
            # save on one second of video (measured, 300 posters on 6 threads: 0.024 CPU-s a poster, 0.016 here)
            stream.thread_count = 1
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= at_seconds:
                    break
            if chosen is None:
                raise ValueError(f"{path.name} has no frame to show")
            # scaled by swscale straight to the poster's size: converting the whole 768p frame first cost as
            # much as decoding the second of video before it (measured: 37 ms a poster, 18 ms this way)
            height = max(1, round(chosen.height * width / chosen.width))
            image = chosen.reformat(width=width, height=height, format="rgb24").to_image()
    except av.FFmpegError as exc:
        raise ValueError(f"{path.name} gives no poster ({exc})") from exc
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=POSTER_QUALITY, optimize=True)
    return out.getvalue()
