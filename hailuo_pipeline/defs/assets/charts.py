"""Small charts for cost_report's metadata: PNGs drawn with matplotlib, embedded as Markdown images (Dagster
renders those), a few KB each so the event log stays small."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
from dagster import MetadataValue

WIDTH_INCHES, HEIGHT_INCHES, DPI = 5.0, 2.0, 80


def _png(draw: Callable[[Any], None]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to memory only
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    try:
        draw(axes)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(figure)


def markdown_image(title: str, png: bytes) -> MetadataValue:
    return MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def spend_per_day_chart(by_day: pd.DataFrame) -> bytes:
    def draw(axes: Any) -> None:
        axes.bar([d[5:] for d in by_day["day"]], by_day["spend_usd"].fillna(0), color="#4f6bed")
        axes.set_ylabel("USD")
        axes.set_title("spend per day (UTC)", fontsize=9)
        axes.tick_params(labelsize=7)

    return _png(draw)


def latency_chart(latency: pd.DataFrame) -> bytes:
    def draw(axes: Any) -> None:
        axes.bar(latency["seconds"], latency["videos"], width=1.0, color="#2a9d8f")
        axes.set_xlabel("seconds from reservation to delivered video", fontsize=7)
        axes.set_ylabel("videos")
        axes.set_title("latency distribution", fontsize=9)
        axes.tick_params(labelsize=7)

    return _png(draw)
