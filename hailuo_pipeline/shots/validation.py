"""Refuse a shot before any money is spent, with a message that names the shot and the fix."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from fractions import Fraction

import httpx
from PIL import Image, UnidentifiedImageError

from hailuo_pipeline import model_limits as limits
from hailuo_pipeline.shots.manifest import FALSE_WORDS, TRUE_WORDS, Shot

ACCEPTED_MODES = {"RGB", "L", "P"}  # P (palette) only without transparency


class ShotInputError(Exception):
    """A shot's input the model would refuse; never worth a request or a retry."""

    def __init__(self, shot_id: str, problem: str, fix: str) -> None:
        super().__init__(f"shot {shot_id!r}: {problem}. Fix: {fix}")
        self.shot_id = shot_id
        self.problem = problem
        self.fix = fix


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


def read_image_bytes(shot: Shot, timeout: float = 30.0) -> bytes:
    if not shot.image:
        raise ShotInputError(shot.shot_id, "the image column is empty", "give a path or an http(s) URL")
    if shot.image_is_url:
        try:
            response = httpx.get(shot.image, timeout=timeout, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ShotInputError(
                shot.shot_id, f"the image URL {shot.image} could not be fetched ({exc})", "check the URL"
            ) from exc
        return response.content
    path = shot.image_path()
    if not path.is_file():
        raise ShotInputError(
            shot.shot_id,
            f"image file {path} does not exist",
            "give a path relative to shots.csv, an absolute path, or an http(s) URL",
        )
    if path.stat().st_size >= limits.MAX_IMAGE_BYTES:
        raise ShotInputError(
            shot.shot_id,
            f"image {path.name} is {path.stat().st_size / 2**20:.1f} MB; the model takes images under 20 MB",
            "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
        )
    return path.read_bytes()


def validate_image(shot_id: str, data: bytes) -> ImageInput:
    """Decode the whole image: truncated files only show themselves here."""
    if len(data) >= limits.MAX_IMAGE_BYTES:
        raise ShotInputError(
            shot_id,
            f"image is {len(data) / 2**20:.1f} MB; the model takes images under 20 MB",
            "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
        )
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            _check_header(shot_id, image)
            image.load()
            width, height, fmt = image.width, image.height, image.format or "unknown"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ShotInputError(
            shot_id, f"image cannot be decoded ({exc})", "re-export it as a complete JPEG, PNG or WebP file"
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
    """A cheap pre-check (fields, file size and image header, no decode) for planning batches."""
    try:
        validate_prompt(shot.shot_id, shot.prompt)
        validate_duration(shot.shot_id, shot.duration)
        validate_prompt_optimizer(shot.shot_id, shot.prompt_optimizer)
        if shot.image_is_url:
            return None
        path = shot.image_path()
        if not path.is_file() or path.stat().st_size >= limits.MAX_IMAGE_BYTES:
            read_image_bytes(shot)  # raises with the precise message
        with Image.open(path) as image:
            _check_header(shot.shot_id, image)
    except ShotInputError as exc:
        return str(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"shot {shot.shot_id!r}: image cannot be decoded ({exc})"
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
    allowed = " or ".join(str(d) for d in limits.DURATIONS_SECONDS)
    try:
        seconds = int(duration)
    except ValueError:
        seconds = None
    if seconds not in limits.DURATIONS_SECONDS:
        raise ShotInputError(shot_id, f"duration {duration!r} is not offered", f"set duration to {allowed}")
    return seconds


def validate_prompt_optimizer(shot_id: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ShotInputError(shot_id, f"prompt_optimizer {value!r} is not a boolean", "write true or false")


def validate_shot(shot: Shot) -> ShotRequest:
    """Everything the model checks, checked here first; raises ShotInputError naming the fix."""
    prompt = validate_prompt(shot.shot_id, shot.prompt)
    duration = validate_duration(shot.shot_id, shot.duration)
    optimizer = validate_prompt_optimizer(shot.shot_id, shot.prompt_optimizer)
    image = validate_image(shot.shot_id, read_image_bytes(shot))
    return ShotRequest(shot, image, prompt, duration, optimizer)
