"""Hostile material for tests: crafted image headers, and a misbehaving image server on loopback."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


def png_header_only(width: int, height: int) -> bytes:
    """A few hundred bytes that claim a `width` x `height` image (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg(size: tuple[int, int] = (640, 360)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


class _Images(BaseHTTPRequestHandler):
    """Paths: /ok.jpg, /html, /huge (announces 400 MB), /endless (no length, never ends), /slow (drips),
    /to-localhost (redirects to localhost), /loop (redirects to itself), anything else 404."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/ok.jpg":
            self._send(200, "image/jpeg", jpeg())
        elif self.path == "/html":
            self._send(200, "text/html", b"<html><body>not an image</body></html>")
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(400 * 2**20))
            self.end_headers()
            self._stream(400 * 2**20)
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            self._stream(None)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what the test wants
        elif self.path in ("/to-localhost", "/loop"):
            target = f"http://localhost:{port}/ok.jpg" if self.path == "/to-localhost" else self.path
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, total: int | None) -> None:
        block, sent = b"\xff" * 65536, 0
        try:
            while total is None or sent < total:
                self.wfile.write(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def image_server() -> Iterator[str]:
    """A plain-HTTP image server on 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def files_outside(root: Path, allowed: list[Path]) -> list[Path]:
    """Files under `root` that are not under one of `allowed`."""
    return [p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(a) for a in allowed)]
