"""Throwaway servers for tests, benchmarks and local trials, started by the project's own files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def apt_install(package: str) -> bool:
    """Install a Debian package when this process may (root, apt-get present); False when it may not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return True
