"""Refuse a shot before any money is spent, with a message that names the shot and the fix."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from hailuo_pipeline import model_limits as limits
from hailuo_pipeline.redact import describe_error, redact
from hailuo_pipeline.shots.manifest import FALSE_WORDS, TRUE_WORDS, Shot
from hailuo_pipeline.shots.remote import RemoteImageError, RemotePolicy, fetch_image

# Decoding a large image takes memory (width x height x 3 bytes): at most this many decodes at once, whatever
# the batch's concurrency, bounds validation's memory (docs/benchmarks.md measures it).
_DECODE_SLOTS = threading.BoundedSemaphore(2)
Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS  # Pillow's own bomb check, at the model's sensible limit

ACCEPTED_MODES = {"RGB", "L", "P"}  # P (palette) only without transparency


class ShotInputError(Exception):
    """A shot's input the model would refuse; never worth a request or a retry."""

    def __init__(self, shot_id: str, problem: str, fix: str) -> None:
        super().__init__(f"shot {shot_id!r}: {problem}. Fix: {fix}")
        self.shot_id = shot_id
        self.problem = problem
        self.fix = fix
        self.bad_input: str | None = None  # "prompt" (with duration and optimizer) or "image", once known


@dataclass(frozen=True)
class ImageInput:
    data: bytes
    sha256: str
    width: int
    height: int
    format: str

    @property
    def content_type(self) -> str:
        return f"image/{self.format.lower()}"


@dataclass(frozen=True)
class ShotRequest:
    """A validated shot, ready to become exactly one fal request."""

    shot: Shot
    image: ImageInput
    prompt: str
    duration: int
    prompt_optimizer: bool

    @property
    def shot_id(self) -> str:
        return self.shot.shot_id


def read_image_bytes(shot: Shot, remote: RemotePolicy | None = None) -> bytes:
    if not shot.image:
        raise ShotInputError(shot.shot_id, "the image column is empty", "give a path or an http(s) URL")
    scheme = urlsplit(shot.image).scheme.lower()
    if shot.image_is_url:
        try:
            return fetch_image(shot.image, remote or RemotePolicy())
        except RemoteImageError as exc:
            raise ShotInputError(shot.shot_id, exc.problem, exc.fix) from exc
    if len(scheme) > 1:  # file://, ftp://, s3://...; a Windows drive letter is one character
        raise ShotInputError(
            shot.shot_id,
            f"the image {redact(shot.image)!r} uses the {scheme}: scheme, which is not supported",
            "give a local path, or an http(s) URL",
        )
    path = shot.image_path()
    if not path.exists():
        raise ShotInputError(
            shot.shot_id,
            f"image file {path} does not exist",
            "give a path relative to shots.csv, an absolute path, or an http(s) URL",
        )
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a device, socket or pipe)"
        raise ShotInputError(shot.shot_id, f"image path {path} is {kind}", "point the image column at an image file")
    size = path.stat().st_size
    if size >= limits.MAX_IMAGE_BYTES:
        raise ShotInputError(
            shot.shot_id,
            f"image {path.name} is {size / 2**20:.1f} MB; the model takes images under 20 MB",
            "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
        )
    with path.open("rb") as handle:  # never more than the limit, even if the file grows meanwhile
        return handle.read(limits.MAX_IMAGE_BYTES)


def validate_image(shot_id: str, data: bytes) -> ImageInput:
    """Decode the whole image: truncated files only show themselves here. The header is checked first,
    so an image too large to decode safely is refused before a byte of it is decoded."""
    if len(data) >= limits.MAX_IMAGE_BYTES:
        raise ShotInputError(
            shot_id,
            f"image is {len(data) / 2**20:.1f} MB; the model takes images under 20 MB",
            "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
        )
    try:
        with warnings.catch_warnings():
            # up to twice the limit, Pillow only warns: the header check below then names the size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_header(shot_id, image)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _DECODE_SLOTS, Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with _DECODE_SLOTS, Image.open(io.BytesIO(data)) as image:
                image.load()
                width, height, fmt = image.width, image.height, image.format or "unknown"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ShotInputError(
            shot_id,
            f"image is too large to decode safely ({exc})",
            f"downscale it to at most {limits.MAX_IMAGE_PIXELS // 1_000_000} megapixels",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ShotInputError(
            shot_id,
            f"image cannot be decoded ({describe_error(exc)})",
            "re-export it as a complete JPEG, PNG or WebP file",
        ) from exc
    return ImageInput(data, hashlib.sha256(data).hexdigest(), width, height, fmt)


def _check_header(shot_id: str, image: Image.Image) -> None:
    """The limits that the image header alone tells: format, colour mode, alpha, size, aspect."""
    fmt, mode, (width, height) = image.format or "unknown", image.mode, image.size
    if fmt not in limits.IMAGE_FORMATS:
        raise ShotInputError(shot_id, f"image is {fmt}; the model takes JPEG, PNG or WebP", "convert it")
    if "A" in image.getbands() or "transparency" in image.info:
        raise ShotInputError(
            shot_id, f"{fmt} image has an alpha channel", "flatten it onto a background and save it as RGB"
        )
    if mode not in ACCEPTED_MODES:
        raise ShotInputError(shot_id, f"image colour mode is {mode}", "convert it to RGB (sRGB) and save again")
    if width * height > limits.MAX_IMAGE_PIXELS:
        raise ShotInputError(
            shot_id,
            f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels); images over "
            f"{limits.MAX_IMAGE_PIXELS // 1_000_000} megapixels are not decoded (the video is 768p)",
            f"downscale it to at most {limits.MAX_IMAGE_PIXELS // 1_000_000} megapixels",
        )
    if min(width, height) <= limits.MIN_SHORT_SIDE_PX:
        raise ShotInputError(
            shot_id,
            f"image is {width}x{height}; its short side must be over {limits.MIN_SHORT_SIDE_PX} px",
            "use a larger source image (768 px on the short side matches the output)",
        )
    if not limits.MIN_ASPECT <= Fraction(width, height) <= limits.MAX_ASPECT:
        raise ShotInputError(
            shot_id,
            f"image is {width}x{height} (aspect {width / height:.2f}); the model takes 2:5 to 5:2",
            "crop it to an aspect ratio between 0.4 and 2.5",
        )


def quick_problem(shot: Shot) -> str | None:
    """A cheap pre-check (fields, file size and image header, no decode) for planning batches; any
    surprise at all makes the shot doubtful (it then gets a run of its own, where it is refused by name)."""
    try:
        validate_prompt(shot.shot_id, shot.prompt)
        validate_duration(shot.shot_id, shot.duration)
        validate_prompt_optimizer(shot.shot_id, shot.prompt_optimizer)
        if shot.image_is_url:
            return None
        path = shot.image_path()
        if not path.is_file() or path.stat().st_size >= limits.MAX_IMAGE_BYTES:
            read_image_bytes(shot)  # raises with the precise message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the header check names it
            with Image.open(path) as image:
                _check_header(shot.shot_id, image)
    except ShotInputError as exc:
        return str(exc)
    except Exception as exc:  # a pre-check: whatever fails here is refused by name by the real check
        return f"shot {shot.shot_id!r}: image cannot be read ({describe_error(exc)})"
    return None


def validate_prompt(shot_id: str, prompt: str) -> str:
    if not prompt.strip():
        raise ShotInputError(shot_id, "the prompt is empty", "describe the motion you want in the prompt column")
    if len(prompt) > limits.MAX_PROMPT_CHARS:
        raise ShotInputError(
            shot_id,
            f"the prompt is {len(prompt)} characters; the model takes at most {limits.MAX_PROMPT_CHARS}",
            "shorten the prompt",
        )
    return prompt


def validate_duration(shot_id: str, duration: str) -> int:
    """Exactly the offered values, as written: `int()` would read '1_0' as 10 and charge for it."""
    offered = {str(d): d for d in limits.DURATIONS_SECONDS}
    seconds = offered.get(duration.strip())
    if seconds is None:
        raise ShotInputError(
            shot_id, f"duration {duration!r} is not offered", f"set duration to {' or '.join(offered)}"
        )
    return seconds


def validate_prompt_optimizer(shot_id: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ShotInputError(shot_id, f"prompt_optimizer {value!r} is not a boolean", "write true or false")


def validate_shot(shot: Shot, remote: RemotePolicy | None = None) -> ShotRequest:
    """Everything the model checks, checked here first; raises ShotInputError naming the fix and which input
    is bad (the prompt's fields are checked first: a bad image means a good prompt)."""
    try:
        prompt, duration, optimizer = validate_prompt_fields(shot)
    except ShotInputError as exc:
        exc.bad_input = "prompt"
        raise
    try:
        image = validate_image(shot.shot_id, read_image_bytes(shot, remote))
    except ShotInputError as exc:
        exc.bad_input = "image"
        raise
    return ShotRequest(shot, image, prompt, duration, optimizer)


def validate_prompt_fields(shot: Shot) -> tuple[str, int, bool]:
    """The prompt asset's inputs: the prompt, the duration and the optimizer switch."""
    return (
        validate_prompt(shot.shot_id, shot.prompt),
        validate_duration(shot.shot_id, shot.duration),
        validate_prompt_optimizer(shot.shot_id, shot.prompt_optimizer),
    )
