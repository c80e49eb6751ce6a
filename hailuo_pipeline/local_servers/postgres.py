"""A throwaway PostgreSQL server for tests, benchmarks and local trials of the shared mode.

It uses the server binaries of the machine's PostgreSQL package (Debian's `postgresql-15` and later;
installed with apt when missing and allowed), runs on loopback with trust authentication, a private
socket directory and fsync off: fast to start, never for data that matters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.local_servers import apt_install, free_port

DEBIAN_PACKAGE = "postgresql-15"


class PostgresUnavailableError(HailuoError, RuntimeError):
    pass


def server_binaries(install: bool = True) -> Path:
    """The directory holding initdb and pg_ctl: $HAILUO_PG_BIN, or the newest Debian PostgreSQL package,
    installed with apt-get first when it is missing and this process may install packages."""
    configured = os.environ.get("HAILUO_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    if install and apt_install(DEBIAN_PACKAGE):
        return server_binaries(install=False)
    raise PostgresUnavailableError(
        f"no PostgreSQL server binaries: install Debian's {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) "
        "or point HAILUO_PG_BIN at a directory holding initdb and pg_ctl"
    )


@dataclass
class LocalPostgres:
    """`root` holds the cluster; as root, the server runs as the `postgres` user (PostgreSQL refuses root)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hailuo-postgres-")))
    port: int = field(default_factory=free_port)
    database: str = "hailuo"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def _data(self) -> Path:
        return self.root / "data"

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        user = "postgres" if os.geteuid() == 0 else None
        return subprocess.run(
            [str(c) for c in command], user=user, check=True, capture_output=True, text=True, cwd=self.root
        )

    def start(self) -> LocalPostgres:
        binaries = server_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "socket").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.root, self.root / "socket"):
                shutil.chown(path, "postgres", "postgres")
        if not (self._data / "PG_VERSION").exists():
            self._run(binaries / "initdb", "-D", self._data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -k {self.root / 'socket'} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(binaries / "pg_ctl", "-D", self._data, "-o", options, "-l", self.root / "server.log", "-w", "start")
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                self.create_database(self.database)
                return
            except psycopg.OperationalError:  # started, but not yet taking connections
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """Another database on the same server (e.g. for a Dagster instance); returns its URL."""
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self._run(server_binaries(install=False) / "pg_ctl", "-D", self._data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
