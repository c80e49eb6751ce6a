"""What a video file really is, measured by decoding its container with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hailuo_pipeline import model_limits as limits


class VideoProbeError(ValueError):
    pass


@dataclass(frozen=True)
class VideoProbe:
    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float
    codec: str


def probe_video(path: Path) -> VideoProbe:
    import av  # here, not at the top: see the README's note on PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoProbeError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            frames = stream.frames
            if not frames:  # some muxers leave the count empty: count by demuxing
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = frames / fps if fps else 0.0
            return VideoProbe(stream.width, stream.height, fps, int(frames), duration, stream.codec_context.name)
    except av.FFmpegError as exc:
        raise VideoProbeError(f"{path.name} is not a playable video ({exc})") from exc


def problems_with(probe: VideoProbe, requested_seconds: int) -> list[str]:
    """Why a delivered video does not match what was paid for (empty when it does)."""
    found = []
    if probe.frames <= 0:
        found.append("it has no frames")
    if abs(probe.duration_seconds - requested_seconds) > limits.DURATION_TOLERANCE_SECONDS:
        found.append(f"it lasts {probe.duration_seconds:.2f} s, not {requested_seconds} s")
    if min(probe.width, probe.height) != limits.OUTPUT_SHORT_SIDE_PX:
        found.append(f"it is {probe.width}x{probe.height}, not 768p")
    return found
