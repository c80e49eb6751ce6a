"""What MiniMax documents for Hailuo 2.3 Fast (Standard, 768p) image-to-video on fal.

These are facts about the remote model, shared by our pre-flight validation and by the
emulator that stands in for fal, so both refuse exactly the same inputs.
"""

from __future__ import annotations

from fractions import Fraction

ENDPOINT_ID = "fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video"

DURATIONS_SECONDS: tuple[int, ...] = (6, 10)
DEFAULT_DURATION_SECONDS = 6
MAX_PROMPT_CHARS = 2000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MIN_SHORT_SIDE_PX = 300  # the short side must be strictly greater than this
MIN_ASPECT = Fraction(2, 5)
MAX_ASPECT = Fraction(5, 2)
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
# Not MiniMax's number but ours: the output is 768p, and 50 megapixels covers every camera still in use
# while bounding what one decode may take (150 MB as RGB).
MAX_IMAGE_PIXELS = 50_000_000

OUTPUT_SHORT_SIDE_PX = 768
OUTPUT_FPS = 25
DURATION_TOLERANCE_SECONDS = 0.5

# fal keeps a finished result this long; results of RESULT_LARGE_BYTES or more only RESULT_TTL_LARGE_SECONDS.
RESULT_TTL_SECONDS = 3600
RESULT_TTL_LARGE_SECONDS = 360
RESULT_LARGE_BYTES = 10 * 1024


def output_size(width: int, height: int) -> tuple[int, int]:
    """The frame size fal returns for an input of this size: same aspect, 768 px short side, even sides."""
    scale = OUTPUT_SHORT_SIDE_PX / min(width, height)
    out_w = round(width * scale / 2) * 2
    out_h = round(height * scale / 2) * 2
    if width <= height:
        out_w = OUTPUT_SHORT_SIDE_PX
    else:
        out_h = OUTPUT_SHORT_SIDE_PX
    return out_w, out_h
