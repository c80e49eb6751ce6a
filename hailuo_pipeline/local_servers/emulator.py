"""The bundled fal emulator in a process of its own: for `hailuo ui --offline` and the benchmarks.

`hailuo ui` becomes `dagster dev` (exec), so the emulator cannot be a thread of it. Started for it, the
emulator process ends with the process that started it: the kernel sends it SIGTERM when `dagster dev` exits
(PR_SET_PDEATHSIG, Linux). It ignores Ctrl-C, so that runs that `dagster dev` stops on Ctrl-C can still cancel
their requests at the emulator."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OFFLINE_KEY = "emulator-demo-key"
PR_SET_PDEATHSIG = 1
ADMIN_LINE = "x-emulator-admin:"  # the last line `hailuo emulator` prints before it serves


@dataclass(frozen=True)
class EmulatorProcess:
    process: subprocess.Popen[bytes]
    fal_env: dict[str, str]  # what points fal_client (and the Platform client) at it: FAL_EXPORTS
    admin_token: str  # for its control endpoints (/_emulator/config, /reset, /stats)


# what points fal_client and the Platform client at the emulator (FAL_ADMIN_KEY: the key its usage API answers to)
FAL_EXPORTS = ("FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE", "HAILUO_FAL_PLATFORM_URL", "FAL_ADMIN_KEY")


def start_emulator_process(
    state_dir: Path,
    options: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    end_with_parent: bool = False,
    timeout_seconds: float = 60.0,
) -> EmulatorProcess:
    """`hailuo emulator` on a free port with `options` (latency flags), returned once it answers."""
    import httpx

    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "emulator.log"  # a file, not a pipe: nobody reads it after the start
    parent = os.getpid()
    command = [sys.executable, "-m", "hailuo_pipeline.cli", "emulator", "--port", "0", "--state-dir", str(state_dir)]
    with log.open("w") as out:
        child = subprocess.Popen(
            [*command, *options],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: end_with(parent)) if end_with_parent else None,
        )
    deadline = time.monotonic() + timeout_seconds

    def give_up(why: str) -> RuntimeError:
        child.kill()
        return RuntimeError(f"the fal emulator {why} (its log, {log}): {log.read_text()[-800:]}")

    while ADMIN_LINE not in (text := log.read_text()):
        if child.poll() is not None or time.monotonic() > deadline:
            raise give_up("did not start")
        time.sleep(0.05)
    lines = [line.strip() for line in text.splitlines()]
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
    admin = next(line.removeprefix(ADMIN_LINE).strip() for line in lines if line.startswith(ADMIN_LINE))
    fal_env = {name: exports[name] for name in FAL_EXPORTS if name in exports}
    while True:  # printed before uvicorn listens: answered once it does
        try:
            health = f"https://{fal_env['FAL_QUEUE_RUN_HOST']}/_emulator/health"
            if httpx.get(health, verify=fal_env["SSL_CERT_FILE"]).status_code == 200:
                return EmulatorProcess(child, fal_env, admin)
        except httpx.HTTPError:
            pass
        if child.poll() is not None or time.monotonic() > deadline:
            raise give_up("does not answer")
        time.sleep(0.05)


def start_offline_fal(state_dir: Path) -> dict[str, str]:
    """The emulator for a session of `hailuo ui --offline`; returns what points fal_client at it, with a key."""
    return {**start_emulator_process(state_dir, end_with_parent=True).fal_env, "FAL_KEY": OFFLINE_KEY}


def end_with(parent: int) -> None:
    """In the child, before it runs the emulator."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request above: nobody will ever send it
        os._exit(0)
