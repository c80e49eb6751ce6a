"""One fal emulator for the session; a fresh data directory and Dagster instance per test.

fal_client reads FAL_QUEUE_RUN_HOST when it is imported, so the emulator's address and CA are chosen
here, before any test module imports the pipeline.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hailuo_pipeline.local_servers import free_port  # stdlib only: fal_client stays unimported until below

_EMULATOR_DIR = Path(tempfile.mkdtemp(prefix="hailuo-emulator-"))
_EMULATOR_PORT = free_port()
os.environ.update(
    {
        "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{_EMULATOR_PORT}",
        "HAILUO_FAL_PLATFORM_URL": f"https://127.0.0.1:{_EMULATOR_PORT}/v1",
        "FAL_ADMIN_KEY": "emulator-admin-key",  # emulator.faults.PLATFORM_ADMIN_KEY (imported below, after this)
        "SSL_CERT_FILE": str(_EMULATOR_DIR / "emulator-ca.pem"),
        "FAL_KEY": "test-key",
        "HAILUO_RETRY_DELAY_SECONDS": "0.2",
        "HAILUO_FAL_POLL_INTERVAL_SECONDS": "0.1",
    }
)

from hailuo_pipeline.catalog import pricing  # noqa: E402
from hailuo_pipeline.catalog.backends import open_catalog  # noqa: E402
from hailuo_pipeline.catalog.postgres_ledger import close_pools  # noqa: E402
from hailuo_pipeline.catalog.storage import CatalogDatabase  # noqa: E402
from hailuo_pipeline.emulator.server import EmulatorServer  # noqa: E402
from hailuo_pipeline.emulator.state import EmulatorState, Latency  # noqa: E402
from hailuo_pipeline.local_servers.postgres import LocalPostgres  # noqa: E402
from hailuo_pipeline.local_servers.s3 import LocalS3  # noqa: E402
from hailuo_pipeline_tests.helpers import new_dagster_home  # noqa: E402

SLOW_FIXTURES = {"emulator", "emulator_server", "workspace", "subprocess_env"}
# made now, served on first use: its CA file must exist before any HTTPS client reads SSL_CERT_FILE, in tests
# that never talk to the emulator too
_EMULATOR = EmulatorServer(_EMULATOR_DIR, port=_EMULATOR_PORT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that talks to the emulator or runs Dagster (in a workspace of its own) is slow. The browser
    tests go first: they share one `dagster dev` and run on one worker, which then joins the others, instead
    of running alone at the end while the other worker waits (about 90 s of the suite's time)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("ui") is None)  # stable: the order is otherwise kept


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Two workers each starting `dagster dev` and Chromium overload two cores (the browser tests then time
    out), so a grouped test fails at once when xdist did not keep its group on one worker."""
    grouped = getattr(item.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group")
    if grouped and "@" not in item.nodeid:
        pytest.fail(
            "pytest-xdist did not keep this test's group on one worker (pytest-dev/pytest-xdist#1386):"
            " install the dev extra's pytest",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    server = _EMULATOR.start()
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorState:
    """The emulator's state, reset, with short latency; tests add faults through `configure`."""
    state = emulator_server.state
    state.reset()
    pricing._asked.clear()  # what this process learnt of the account's price went with the reset
    pricing._unreachable.clear()
    state.config.latency = Latency(queue_seconds=0.05, inference_seconds=0.1, jitter_seconds=0.0)
    return state


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory and a DAGSTER_HOME of the test's own."""
    data = tmp_path / "data"
    home = new_dagster_home(tmp_path / "dagster_home")
    data.mkdir()
    monkeypatch.setenv("HAILUO_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("HAILUO_DAILY_BUDGET_USD", "HAILUO_TOTAL_BUDGET_USD"):
        monkeypatch.delenv(name, raising=False)
    return data


@pytest.fixture
def subprocess_env(workspace: Path, emulator_server: EmulatorServer) -> dict[str, str]:
    """The environment a `hailuo` child process needs to reach the same emulator and workspace."""
    env = dict(os.environ)
    env.update(emulator_server.env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the session (the machine's package, installed when missing)."""
    server = LocalPostgres().start()
    yield server
    close_pools()
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """A schema of the test's own on the session's server."""
    return f"{postgres_server.url}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["duckdb", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> CatalogDatabase:
    """Each backend in turn: the same ledger and report tests run against both."""
    if request.param == "duckdb":
        return open_catalog(tmp_path / "catalog.duckdb")
    return open_catalog(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """An S3 API on localhost; this process reaches it through the standard AWS variables, as workers do."""
    server = LocalS3().start()
    os.environ.update(server.env())
    yield server
    server.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Each phase's report on the test item, so a fixture can act on a failure (the UI tests' screenshots)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
