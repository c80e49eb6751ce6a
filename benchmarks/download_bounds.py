"""How long a hostile download holds a shot, against an honest download of the same video, in one run, with the
pipeline's defaults (FalSettings: 120 s for every attempt at one video, 64 KiB/s after the first 10 s).

    python benchmarks/download_bounds.py [--skip-slow]

Cases, each served from loopback by a server of this script's:
- honest: the video, announced with its length (the baseline);
- 5 GB announced: refused on the header, nothing written;
- drip: a few bytes a second, no length: dropped by the minimum rate after its first seconds;
- 1 MiB/s of 5 GB, no length: ends at the delivery's deadline (or the size cap, whichever comes first).
Prints each case's seconds, its ratio to the honest one, and the bytes left on disk (always 0).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from hailuo_pipeline.emulator.render import render_video  # noqa: E402
from hailuo_pipeline.fal.config import FalSettings  # noqa: E402
from hailuo_pipeline.fetch_policy import FetchPolicy  # noqa: E402
from hailuo_pipeline.generation.download import DownloadBounds, DownloadError, download_video  # noqa: E402
from hailuo_pipeline_tests.hostile import jpeg  # noqa: E402

VIDEO = render_video(jpeg((1280, 720)), 6)


class Server(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        try:
            if self.path == "/honest":
                self.send_header("Content-Length", str(len(VIDEO)))
                self.end_headers()
                self.wfile.write(VIDEO)
            elif self.path == "/announces-5gb":
                self.send_header("Content-Length", str(5 * 2**30))
                self.end_headers()
                self.wfile.write(VIDEO)
            elif self.path == "/drip":
                self.end_headers()
                while True:
                    self.wfile.write(b"\0" * 8)
                    self.wfile.flush()
                    time.sleep(1)
            elif self.path == "/mib-per-second":
                self.end_headers()
                while True:
                    for _ in range(10):
                        self.wfile.write(b"\0" * (2**20 // 10))
                        time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass


async def measure(url: str, folder: Path, fal: FalSettings, policy: FetchPolicy) -> tuple[float, str]:
    bounds = DownloadBounds(
        fal.download_deadline_seconds, fal.download_min_bytes_per_second, fal.download_grace_seconds, policy
    )
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as http:
        try:
            await download_video(http, url, folder / "take001-x.mp4", None, bounds)
            outcome = "delivered"
        except DownloadError as exc:
            outcome = str(exc)
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-slow", action="store_true", help="leave out the 1 MiB/s case (it runs to the deadline)")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    fal = FalSettings(key="")
    policy = FetchPolicy.allowing(f"127.0.0.1:{server.server_address[1]}")
    cases = ["honest", "announces-5gb", "drip", *([] if args.skip_slow else ["mib-per-second"])]
    folder = Path(tempfile.mkdtemp(prefix="hailuo-download-bounds-")) / "shot"
    baseline = None
    print(
        f"defaults: deadline {fal.download_deadline_seconds:.0f} s, {fal.download_min_bytes_per_second // 1024} KiB/s "
        f"after {fal.download_grace_seconds:.0f} s; video {len(VIDEO):,} bytes"
    )
    for case in cases:
        seconds, outcome = asyncio.run(measure(f"{base}/{case}", folder, fal, policy))
        left = sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".partial")) if folder.exists() else 0
        baseline = baseline or seconds
        print(
            f"{case:15} {seconds:8.3f} s  ratio {seconds / baseline:9.1f}  partial bytes left {left}  ({outcome[:90]})"
        )
    server.shutdown()


if __name__ == "__main__":
    main()
