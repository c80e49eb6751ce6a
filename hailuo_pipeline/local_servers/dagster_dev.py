"""`hailuo ui`, which becomes `dagster dev` (webserver, daemon, code server), on a free port, for the browser
tests and the benchmark of a UI backfill: started in its own process group, ready once its webserver answers,
stopped with everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hailuo_pipeline.local_servers import free_port


@dataclass
class LocalDagsterDev:
    env: dict[str, str]
    cwd: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    review_port: int = field(default_factory=free_port)  # the review server `hailuo ui` starts beside it
    _process: subprocess.Popen | None = None
    _log: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def review_url(self) -> str:
        return self.env.get("HAILUO_REVIEW_URL") or f"http://127.0.0.1:{self.review_port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def start(self, timeout_seconds: float) -> LocalDagsterDev:
        """Start it and wait until the webserver answers (slow on a busy 2-core machine); its output goes
        to `log_path`."""
        import httpx

        self._log = self.log_path.open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hailuo_pipeline.cli", "ui", "--port", str(self.port), "--host", "127.0.0.1"],
            env={**self.env, "HAILUO_REVIEW_URL": self.review_url},
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dagster dev did not start within {timeout_seconds:.0f} s; see {self.log_path}")
            time.sleep(1)

    def stop(self, timeout_seconds: float = 60) -> bool:
        """Stop it as Ctrl-C would; True if it shut down by itself, False if it had to be killed."""
        clean = True
        if self._process is not None:
            if self._process.poll() is None:
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                clean = False
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=30)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return clean
