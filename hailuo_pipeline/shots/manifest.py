"""Read `shots.csv` into shots, naming the row of every problem."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS, DURATIONS_SECONDS

REQUIRED_COLUMNS = ("shot_id", "image", "prompt")
OPTIONAL_COLUMNS = ("duration", "prompt_optimizer")
SAFE_SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}


class ManifestError(HailuoError, ValueError):
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

    def budgeted_seconds(self) -> int:
        """The length a budget counts the shot at: its duration when offered, else the default (its run then
        refuses it by name, before any spend)."""
        offered = {str(d) for d in DURATIONS_SECONDS}
        return int(self.duration) if self.duration in offered else DEFAULT_DURATION_SECONDS

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


MAX_FIELD_CHARS = 10_000  # a prompt is at most 2000 characters; a path or URL far less than this


def _text(path: Path, raw: bytes) -> str:
    """The manifest as text: UTF-8 (with or without a BOM) or UTF-16 with its BOM, which is what
    spreadsheet programs write; anything else is refused with the line of its first bad byte."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not valid UTF-16 ({exc.reason}); save it as UTF-8") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}); the file looks like it was saved "
            "in a legacy encoding (Windows-1252, Latin-1): save it as UTF-8 (CSV UTF-8 in spreadsheet programs)"
        ) from exc
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ManifestError(f"{path}: line {line} holds a NUL character; is it a binary file? save it as UTF-8 CSV")
    return text


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each record, strictly: an unclosed quote, a NUL byte or a field over the
    limit stops the reading with the line where the record began."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    started = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            unclosed = "; a quote opened there is never closed" if "end of data" in str(exc) else ""
            raise ManifestError(f"{path}: line {started}: {exc}{unclosed}") from exc
        line, started = started, reader.line_num + 1
        long = next((f for f in fields if len(f) > MAX_FIELD_CHARS), None)
        if long is not None:
            raise ManifestError(
                f"{path}: line {line}: a field of {len(long)} characters (at most {MAX_FIELD_CHARS}); "
                "is a quote left open on that line?"
            )
        yield line, fields


def read_manifest(path: Path) -> Manifest:
    """The manifest's shots, and each bad row with its line. A file that cannot be read whole (its
    encoding, an unclosed quote, a broken header) raises ManifestError naming the line."""
    if not path.exists():
        raise ManifestError(f"no manifest at {path}; create it with the header shot_id,image,prompt")
    if not path.is_file():
        raise ManifestError(f"{path} is not a regular file; the manifest must be a CSV file")
    raw = path.read_bytes()
    manifest = Manifest(path=path, content_sha256=hashlib.sha256(raw).hexdigest())
    records = _records(path, _text(path, raw))
    _, header = next(records, (1, []))
    columns = [c.strip() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: header is missing column(s) {', '.join(missing)}; "
            f"the header must be shot_id,image,prompt[,duration,prompt_optimizer] (found: {','.join(columns)})"
        )
    doubled = sorted({c for c in columns if c and columns.count(c) > 1})
    if doubled:
        raise ManifestError(f"{path}: line 1: column(s) {', '.join(doubled)} appear more than once; keep one of each")
    first_row_of: dict[str, int] = {}
    for line, fields in records:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        record = dict(zip(columns, fields, strict=False))
        shot_id = (record.get("shot_id") or "").strip()
        problem = shot_id_problem(shot_id)
        if problem:
            manifest.errors.append(RowError(line, shot_id, problem))
            continue
        if shot_id in first_row_of:
            manifest.errors.append(
                RowError(
                    line,
                    shot_id,
                    f"duplicate shot_id, first used on row {first_row_of[shot_id]}; the first row is kept",
                )
            )
            continue
        first_row_of[shot_id] = line
        manifest.shots[shot_id] = Shot(
            shot_id=shot_id,
            image=(record.get("image") or "").strip(),
            prompt=record.get("prompt") or "",
            duration=(record.get("duration") or "").strip() or str(DEFAULT_DURATION_SECONDS),
            prompt_optimizer=(record.get("prompt_optimizer") or "").strip() or "true",
            row=line,
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
