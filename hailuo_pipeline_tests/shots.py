"""Building shots for tests: real image files and manifests, written to the test's data directory."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from hailuo_pipeline.shots.manifest import write_manifest


def make_image(
    path: Path, size: tuple[int, int] = (640, 360), fmt: str = "JPEG", mode: str = "RGB", seed: int = 0
) -> Path:
    image = Image.new(mode, size, color=_colour(mode, seed))
    ImageDraw.Draw(image).rectangle(
        [size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=_colour(mode, seed + 7)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def _colour(mode: str, seed: int):
    base = ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256, 255)
    return {"RGB": base[:3], "RGBA": (*base[:3], 128), "CMYK": base, "L": base[0]}[mode]


def write_shots(data_dir: Path, shots: list[dict[str, str]]) -> Path:
    """Each shot: shot_id, prompt, optional duration/prompt_optimizer, image (a path) or a generated one."""
    rows = []
    for index, shot in enumerate(shots):
        row = dict(shot)
        if "image" not in row:
            image = make_image(data_dir / "images" / f"{row['shot_id']}.jpg", seed=index + 1)
            row["image"] = f"images/{image.name}"
        rows.append(row)
    manifest = data_dir / "shots.csv"
    write_manifest(manifest, rows)
    return manifest
