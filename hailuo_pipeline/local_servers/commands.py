"""`hailuo emulator` and `hailuo servers`: the local stand-ins, served until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from hailuo_pipeline.settings import Settings


def serve_emulator(args: argparse.Namespace) -> int:
    from hailuo_pipeline.emulator.server import EmulatorServer
    from hailuo_pipeline.emulator.state import EmulatorConfig, Latency

    latency = Latency(args.queue_seconds, args.inference_seconds, args.jitter_seconds)
    state_dir = Path(args.state_dir) if args.state_dir else Settings.from_env().data_dir / "emulator"
    server = EmulatorServer(state_dir, port=args.port, config=EmulatorConfig(latency=latency))
    print(f"fal emulator on {server.url}; point fal_client at it with:")
    for key, value in server.env().items():
        print(f"  export {key}={value}")
    print("  export FAL_KEY=any-non-empty-key")
    print("control endpoints (/_emulator/config, /reset, /stats) need the header")
    print(f"  x-emulator-admin: {server.admin_token}", flush=True)
    server.serve_forever()
    return 0


def serve_local_servers(args: argparse.Namespace) -> int:
    """A local PostgreSQL and S3 API for trying the shared mode on one machine (until Ctrl-C)."""
    from hailuo_pipeline.local_servers.postgres import LocalPostgres
    from hailuo_pipeline.local_servers.s3 import LocalS3

    root = Path(args.dir) if args.dir else Settings.from_env().data_dir / "servers"
    postgres = LocalPostgres(root=root.resolve() / "postgres").start()
    s3 = LocalS3().start()
    bucket = s3.create_bucket("hailuo")
    exports = {
        "HAILUO_CATALOG_URL": postgres.url,
        "HAILUO_VIDEO_STORE": f"{bucket}/videos",
        "HAILUO_CATALOG_SNAPSHOT": f"{bucket}/catalog.duckdb",
        **s3.env(),
    }
    print("# shared mode on this machine; in another shell:")
    for name, value in exports.items():
        print(f"export {name}={value}")
    print("# Ctrl-C stops both servers (the S3 API keeps nothing; PostgreSQL's data stays in the folder)")
    try:
        signal.pause()  # `kill` acts like Ctrl-C (see main)
    except KeyboardInterrupt:
        pass
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave a server behind
            signal.signal(number, signal.SIG_IGN)
        postgres.stop()
        s3.stop()
    return 0
