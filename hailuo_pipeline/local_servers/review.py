"""The review server for a `hailuo ui` session: `hailuo review --serve` in a process that ends with the process
that started it (which becomes `dagster dev`), its log in a file under the data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from hailuo_pipeline.local_servers.emulator import end_with


def start_review_process(log_dir: Path, env: Mapping[str, str]) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()
    with (log_dir / "review-server.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hailuo_pipeline.cli", "review", "--serve"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: end_with(parent),
        )
