"""The embedded catalog file: upgrades in place, the report command, exiting while a close is under way,
sharing the file between processes (the tests both backends share are in test_backends.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from hailuo_pipeline.catalog import store
from hailuo_pipeline.catalog.backends import open_catalog
from hailuo_pipeline.catalog.schema import LATEST_VERSION
from hailuo_pipeline.catalog.store import (
    Catalog,
    NetworkCatalogError,
    filesystem_type,
    migrate,
    refuse_network_filesystem,
)
from hailuo_pipeline.cli import main as hailuo_main
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline_tests.helpers import REPO_ROOT, wait_for
from hailuo_pipeline_tests.test_backends import seed_known_rows


def test_upgrades_an_older_catalog_in_place_without_losing_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        migrate(conn, target=1)
        conn.execute(
            "INSERT INTO requests (request_key, shot_id, take, fingerprint, endpoint, duration_seconds, status, "
            "created_at, cost_usd) VALUES ('k1', 's1', 1, 'f', ?, 6, 'succeeded', '2026-01-02 03:04:05', 0.19)",
            [ENDPOINT_ID],
        )
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    with Catalog(path).connect(read_only=True) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (LATEST_VERSION,)
        assert conn.execute("SELECT day, spend_usd FROM spend_by_day").fetchall() == [
            (date(2026, 1, 2), Decimal("0.1900"))
        ]


def test_report_cli_formats(workspace, capsys):
    seed_known_rows(open_catalog(workspace / "catalog.duckdb"))
    assert hailuo_main(["report", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["spend_all_time_usd"] == pytest.approx(1.02)
    assert hailuo_main(["report", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "metric,value" and "requests,7" in lines
    assert hailuo_main(["report"]) == 0
    assert "all time $1.02" in capsys.readouterr().out


# The child exits the moment its idle-close timer has taken the connection and begun closing it. A WAL of
# a few MB makes that close (a checkpoint) last tens of milliseconds. If the exit does not wait for it, the
# process ends mid-checkpoint (the WAL is left behind) or, when the close returns during interpreter
# finalisation, aborts ("terminate called ... FATAL: exception not rethrown"), as a CI run did.
_EXIT_DURING_IDLE_CLOSE = """
import sys
from hailuo_pipeline.catalog import store
from hailuo_pipeline_tests.helpers import wait_for
catalog = store.Catalog(sys.argv[1], linger_seconds=0.01, max_hold_seconds=60)
with catalog.connect() as conn:
    conn.execute("CREATE TABLE bulk (n BIGINT, h VARCHAR)")
    conn.execute("INSERT INTO bulk SELECT range, md5(range::VARCHAR) FROM range(100000)")
    conn.execute("UPDATE bulk SET h = h || 'x'")
wait_for(lambda: catalog.path not in store._held, interval=0.001, what="the idle-close timer to take the connection")
print("closing")
"""


def test_exit_waits_for_a_close_already_under_way(tmp_path):
    path = tmp_path / "c.duckdb"
    child = subprocess.run(
        [sys.executable, "-c", _EXIT_DURING_IDLE_CLOSE, str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (child.returncode, child.stdout.strip()) == (0, "closing"), child.stderr
    assert not path.with_name(path.name + ".wal").exists()  # the checkpoint on close finished
    with Catalog(path).connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bulk WHERE h LIKE '%x'").fetchone() == (100000,)


_WRITE_ONE_ROW = """
import sys
from hailuo_pipeline.catalog.store import Catalog
with Catalog(sys.argv[1], patience_seconds=60).connect() as conn:
    conn.execute("INSERT INTO t VALUES (2)")
"""


def test_a_holder_keeps_the_file_while_nobody_waits_and_steps_aside_when_a_process_asks(tmp_path):
    """Each step aside costs a close (a checkpoint) and a reopen: a lone process keeps its connection past
    max_hold_seconds; one that finds the file locked says so, and gets its turn at the holder's next commit."""
    catalog = Catalog(tmp_path / "c.duckdb", linger_seconds=600, max_hold_seconds=0, max_hold_unasked_seconds=600)
    try:
        with catalog.connect() as conn:
            conn.execute("CREATE TABLE t (n INT)")
        held = store._held[catalog.path]
        with catalog.connect() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        assert store._held[catalog.path] is held  # past max_hold_seconds, and nobody asked: kept
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITE_ONE_ROW, catalog.path], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
        )
        wait_for(lambda: Path(catalog.waiting_path).exists(), what="the second process to ask for the file")
        with catalog.connect() as conn:
            conn.execute("INSERT INTO t VALUES (3)")
        assert catalog.path not in store._held  # asked: stepped aside at this commit
        assert child.wait(timeout=60) == 0, child.stderr.read() if child.stderr else ""
        with catalog.connect(read_only=True) as conn:
            assert sorted(n for (n,) in conn.execute("SELECT n FROM t").fetchall()) == [1, 2, 3]
    finally:
        catalog.close()


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
fileserver:/export /mnt/shared nfs4 rw,vers=4.2 0 0
//nas/media /mnt/nas cifs rw 0 0
/dev/sdb1 /mnt/shared/local ext4 rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind", "refused"),
    [
        ("/home/me/data/catalog.duckdb", "ext4", False),
        ("/tmp/catalog.duckdb", "tmpfs", False),
        ("/mnt/shared/team/catalog.duckdb", "nfs4", True),
        ("/mnt/nas/catalog.duckdb", "cifs", True),
        ("/mnt/shared/local/catalog.duckdb", "ext4", False),  # a local disk mounted inside a network share
        ("/mnt/sharedother/catalog.duckdb", "ext4", False),  # a prefix of the name is not the mount point
    ],
)
def test_the_embedded_catalog_refuses_a_network_filesystem(path, kind, refused):
    assert filesystem_type(Path(path), MOUNTS) == kind
    if refused:
        with pytest.raises(NetworkCatalogError, match="HAILUO_CATALOG_URL"):
            refuse_network_filesystem(Path(path), MOUNTS)
    else:
        refuse_network_filesystem(Path(path), MOUNTS)
