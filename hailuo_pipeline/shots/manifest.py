"""Read `shots.csv` into shots, naming the row of every problem."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS

REQUIRED_COLUMNS = ("shot_id", "image", "prompt")
OPTIONAL_COLUMNS = ("duration", "prompt_optimizer")
SAFE_SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing file, missing columns)."""


@dataclass(frozen=True)
class Shot:
    shot_id: str
    image: str
    prompt: str
    duration: str
    prompt_optimizer: str
    row: int
    manifest_dir: Path

    @property
    def image_is_url(self) -> bool:
        return self.image.lower().startswith(("http://", "https://"))

    def image_path(self) -> Path:
        path = Path(self.image).expanduser()
        return path if path.is_absolute() else (self.manifest_dir / path)

    def content_hash(self) -> str:
        text = "\x1f".join((self.image, self.prompt, self.duration, self.prompt_optimizer))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RowError:
    row: int
    shot_id: str
    message: str

    def __str__(self) -> str:
        return f"shots.csv row {self.row} (shot_id {self.shot_id!r}): {self.message}"


@dataclass
class Manifest:
    path: Path
    content_sha256: str
    shots: dict[str, Shot] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)


def shot_id_problem(shot_id: str) -> str | None:
    if not shot_id:
        return "shot_id is empty; give every row a unique id such as 'shot-001'"
    if ".." in shot_id or "/" in shot_id or "\\" in shot_id:
        return "shot_id must not contain path separators or '..'; use letters, digits, '.', '_' and '-'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in shot_id):
        return "shot_id contains a control character; use letters, digits, '.', '_' and '-'"
    if not SAFE_SHOT_ID.match(shot_id):
        return (
            "shot_id may only use letters, digits, '.', '_' and '-' (no commas or spaces), "
            "start with a letter or digit, and be at most 128 characters"
        )
    return None


def read_manifest(path: Path) -> Manifest:
    if not path.exists():
        raise ManifestError(f"no manifest at {path}; create it with the header shot_id,image,prompt")
    raw = path.read_bytes()
    manifest = Manifest(path=path, content_sha256=hashlib.sha256(raw).hexdigest())
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: header is missing column(s) {', '.join(missing)}; "
            f"the header must be shot_id,image,prompt[,duration,prompt_optimizer] (found: {','.join(columns)})"
        )
    reader.fieldnames = columns
    first_row_of: dict[str, int] = {}
    for index, record in enumerate(reader, start=2):  # row 1 is the header
        shot_id = (record.get("shot_id") or "").strip()
        problem = shot_id_problem(shot_id)
        if problem:
            manifest.errors.append(RowError(index, shot_id, problem))
            continue
        if shot_id in first_row_of:
            manifest.errors.append(
                RowError(index, shot_id, f"duplicate shot_id, first used on row {first_row_of[shot_id]}")
            )
            manifest.shots.pop(shot_id, None)
            continue
        first_row_of[shot_id] = index
        manifest.shots[shot_id] = Shot(
            shot_id=shot_id,
            image=(record.get("image") or "").strip(),
            prompt=record.get("prompt") or "",
            duration=(record.get("duration") or "").strip() or str(DEFAULT_DURATION_SECONDS),
            prompt_optimizer=(record.get("prompt_optimizer") or "").strip() or "true",
            row=index,
            manifest_dir=path.parent,
        )
    return manifest


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write a manifest (used by the demo and by tests that build shots)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
