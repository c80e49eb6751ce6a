"""A batch at a glance: its videos' poster frames in a grid, each captioned with shot, take, duration and cost."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

TILE_WIDTH = 160  # pixels: a 48-shot sheet stays a few tens of KB in Dagster's event log
COLUMNS = 6
MAX_TILES = 48  # a larger batch shows its first 48 and says how many more
CAPTION_HEIGHT = 30
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)


@dataclass(frozen=True)
class Tile:
    poster_jpeg: bytes
    shot_id: str
    take: int
    duration_seconds: float
    cost_usd: float


def contact_sheet(tiles: list[Tile], quality: int = 70) -> bytes:
    """One JPEG of up to MAX_TILES posters (in the order given); raises ValueError when there is none."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one poster")
    shown = tiles[:MAX_TILES]
    posters = [_scaled(tile.poster_jpeg) for tile in shown]
    tile_height = max(p.height for p in posters) + CAPTION_HEIGHT
    columns = min(COLUMNS, len(shown))
    rows = -(-len(shown) // columns) + (1 if len(tiles) > MAX_TILES else 0)
    sheet = Image.new("RGB", (columns * TILE_WIDTH, rows * tile_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (tile, poster) in enumerate(zip(shown, posters, strict=True)):
        x, y = (index % columns) * TILE_WIDTH, (index // columns) * tile_height
        sheet.paste(poster, (x, y))
        draw.text((x + 4, y + poster.height + 2), _clip(tile.shot_id, 24), fill=TEXT, font=font)
        draw.text(
            (x + 4, y + poster.height + 15),
            f"take {tile.take} | {tile.duration_seconds:.1f} s | ${tile.cost_usd:.2f}",
            fill=TEXT,
            font=font,
        )
    if len(tiles) > MAX_TILES:
        draw.text((4, (rows - 1) * tile_height + 8), f"... and {len(tiles) - MAX_TILES} more", fill=TEXT, font=font)
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _scaled(jpeg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as image:
        height = max(1, round(image.height * TILE_WIDTH / image.width))
        return image.convert("RGB").resize((TILE_WIDTH, height))


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "~"
