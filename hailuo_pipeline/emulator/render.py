"""Render the MP4 the model would return: a slow pan across the input image, 768p, 25 fps."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from hailuo_pipeline import model_limits as limits


def render_video(image_bytes: bytes, duration_seconds: int) -> bytes:
    with Image.open(io.BytesIO(image_bytes)) as source:
        image = source.convert("RGB")
    out_w, out_h = limits.output_size(*image.size)
    zoom = 1.12  # a canvas 12% larger than the frame leaves room to pan
    canvas = np.asarray(image.resize((round(out_w * zoom) // 2 * 2, round(out_h * zoom) // 2 * 2)))
    frames = duration_seconds * limits.OUTPUT_FPS
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(limits.OUTPUT_FPS))
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30", "tune": "stillimage"}
        slack_y, slack_x = canvas.shape[0] - out_h, canvas.shape[1] - out_w
        for index in range(frames):
            t = index / max(frames - 1, 1)
            y, x = round(slack_y * t / 2), round(slack_x * t)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[y : y + out_h, x : x + out_w]))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
