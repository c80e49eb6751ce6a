"""`hailuo review` (the static page, or `--serve` the review server) and `hailuo verdict`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hailuo_pipeline.settings import Settings


def review_command(args: argparse.Namespace) -> int:
    from hailuo_pipeline.catalog.backends import open_catalog
    from hailuo_pipeline.review.page import write_review

    settings = Settings.from_env()
    if args.serve:
        from hailuo_pipeline.review.server import serve_review
        from hailuo_pipeline.video.store import open_video_store

        print(f"review server at {settings.review_url} (runs linked at {settings.dagster_url}); Ctrl-C stops it")
        sys.stdout.flush()
        catalog = open_catalog(settings.catalog_location)
        serve_review(catalog, open_video_store(settings.video_location), settings.review_url, settings.dagster_url)
        return 0
    out = Path(args.out) if args.out else settings.data_dir / "review" / "index.html"
    dagster_url = args.dagster_url or settings.dagster_url
    page, takes = write_review(open_catalog(settings.catalog_location), out, dagster_url)
    print(f"{takes} take(s) in {page}")
    return 0


def verdict_command(args: argparse.Namespace) -> int:
    from hailuo_pipeline.catalog.backends import open_catalog
    from hailuo_pipeline.catalog.ledger import RequestLedger

    row = RequestLedger(open_catalog(Settings.from_env().catalog_location)).record_verdict(
        args.shot, args.take, args.verdict, args.note
    )
    said = {"approve": "approved", "reject": "rejected", "withdraw": "no verdict now"}[args.verdict]
    print(f"{row.shot_id} take {row.take} (fal request {row.request_id}): {said}")
    return 0
