"""Sample shots for the demo: generated stills (no downloads) and prompts."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from hailuo_pipeline.shots.manifest import write_manifest

DEMO_SHOTS = [
    (
        "harbour-dawn",
        (1280, 720),
        ((18, 40, 90), (250, 170, 90)),
        "Slow dolly forward over a calm harbour at dawn",
        "6",
    ),
    ("forest-path", (720, 1280), ((20, 70, 30), (180, 220, 140)), "The camera drifts along a misty forest path", "10"),
    ("city-night", (1024, 1024), ((10, 10, 30), (200, 60, 160)), "Neon reflections ripple on a rainy street", "6"),
]


def draw_still(size: tuple[int, int], colours: tuple[tuple[int, int, int], tuple[int, int, int]]) -> Image.Image:
    width, height = size
    top, bottom = colours
    image = Image.new("RGB", size)
    pen = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        pen.line([(0, y), (width, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for i in range(12):
        x, y, r = (i * 97) % width, (i * 53) % height, 20 + (i * 7) % 60
        pen.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=3)
    return image


def write_demo_shots(data_dir: Path) -> Path:
    images = data_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for shot_id, size, colours, prompt, duration in DEMO_SHOTS:
        path = images / f"{shot_id}.jpg"
        if not path.exists():
            draw_still(size, colours).save(path, quality=90)
        rows.append(
            {
                "shot_id": shot_id,
                "image": f"images/{path.name}",
                "prompt": prompt,
                "duration": duration,
                "prompt_optimizer": "true",
            }
        )
    manifest = data_dir / "shots.csv"
    if not manifest.exists():
        write_manifest(manifest, rows)
    return manifest
