"""Run the emulator over HTTPS (a private CA from trustme), in a thread or in the foreground."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn

from hailuo_pipeline.emulator.app import build_app
from hailuo_pipeline.emulator.state import EmulatorConfig, EmulatorState


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def write_tls_files(directory: Path) -> TlsFiles:
    """A private CA and the server's certificate; the directory and the private key are the owner's only."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    files = TlsFiles(directory / "emulator-ca.pem", directory / "emulator-cert.pem", directory / "emulator-key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    server_cert.cert_chain_pems[0].write_to_path(str(files.cert))
    files.key.touch(mode=0o600)
    files.key.chmod(0o600)
    server_cert.private_key_pem.write_to_path(str(files.key))
    return files


class EmulatorServer:
    """The fal-compatible emulator on 127.0.0.1; `env()` is what fal_client needs to reach it."""

    def __init__(self, state_dir: Path, port: int = 0, config: EmulatorConfig | None = None) -> None:
        self.tls = write_tls_files(state_dir)
        self.admin_token = secrets.token_urlsafe(24)  # for /_emulator/config, /reset and /stats
        self.state = EmulatorState(config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        served = uvicorn.Config(
            build_app(self.state, self.admin_token),
            ssl_certfile=str(self.tls.cert),
            ssl_keyfile=str(self.tls.key),
            log_level="warning",
            lifespan="off",
            access_log=False,
            # longer than clients keep idle connections (httpx: 5 s, uvicorn's default too): with equal timeouts
            # a client reuses a connection at the moment the server closes it, and the request fails with
            # "Server disconnected without sending a response" (seen under the bare script's 0.1 s polling)
            timeout_keep_alive=75,
        )
        self._server = uvicorn.Server(served)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        """What points fal_client (and the Platform client) here; FAL_ADMIN_KEY is the key its usage answers to."""
        return {
            "FAL_QUEUE_RUN_HOST": self.host,
            "SSL_CERT_FILE": str(self.tls.ca),
            "HAILUO_FAL_PLATFORM_URL": f"{self.url}/v1",
            "FAL_ADMIN_KEY": self.state.config.admin_key,
        }

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fal-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fal emulator did not start")
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        self._server.run(sockets=[self._socket])

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # don't linger on clients' idle keep-alive connections
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.state.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
