"""The bundled fal emulator in a process of its own, for `hailuo ui --offline`.

`hailuo ui` becomes `dagster dev` (exec), so the emulator cannot be a thread of it. The emulator process
ends with the process that started it: the kernel sends it SIGTERM when `dagster dev` exits
(PR_SET_PDEATHSIG, Linux). It ignores Ctrl-C, so that runs that `dagster dev` stops on Ctrl-C can still cancel
their requests at the emulator."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hailuo_pipeline.local_servers import free_port

OFFLINE_KEY = "emulator-demo-key"
PR_SET_PDEATHSIG = 1
READY_LINE = "x-emulator-admin"  # the last line `hailuo emulator` prints before it serves


def start_offline_fal(state_dir: Path, timeout_seconds: float = 60.0) -> dict[str, str]:
    """Start the emulator; returns what points fal_client at it (its host, its CA and a key)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "emulator.log"
    parent = os.getpid()
    command = [sys.executable, "-m", "hailuo_pipeline.cli", "emulator", "--port", str(free_port())]
    with log.open("w") as out:
        child = subprocess.Popen(
            [*command, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _end_with(parent),
        )
    deadline = time.monotonic() + timeout_seconds
    while READY_LINE not in (text := log.read_text()):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise RuntimeError(f"the fal emulator did not start (its log, {log}): {text[-800:]}")
        time.sleep(0.05)
    exports = dict(
        line.strip().removeprefix("export ").split("=", 1) for line in text.splitlines() if "export " in line
    )
    return {
        "FAL_QUEUE_RUN_HOST": exports["FAL_QUEUE_RUN_HOST"],
        "SSL_CERT_FILE": exports["SSL_CERT_FILE"],
        "FAL_KEY": OFFLINE_KEY,
    }


def _end_with(parent: int) -> None:
    """In the child, before it runs the emulator."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request above: nobody will ever send it
        os._exit(0)
