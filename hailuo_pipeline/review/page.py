"""`hailuo review`: one static HTML page to watch every take, with its prompt, cost and the Dagster run that made it.

Every value on the page comes from the catalog or the manifest and is escaped: a prompt is text, never markup."""

from __future__ import annotations

import html
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from hailuo_pipeline.catalog.storage import CatalogDatabase

TAKES_SQL = """
SELECT v.shot_id, r.take, s.prompt, r.duration_seconds AS requested_seconds, r.cost_usd, r.request_id, r.run_id,
       v.path, v.duration_seconds AS measured_seconds, v.width, v.height, v.bytes, v.recorded_at
FROM videos v
JOIN requests r ON r.request_key = v.request_key
LEFT JOIN shots s ON s.shot_id = v.shot_id
ORDER BY v.shot_id, r.take DESC
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; color: #222; }
section { display: flex; align-items: flex-start; gap: 1.5rem; padding: 1rem 0; border-bottom: 1px solid #ddd; }
video { width: 384px; max-height: 60vh; object-fit: contain; background: #000; flex: none; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
dt { color: #666; } .prompt { white-space: pre-wrap; max-width: 60ch; }
"""


def review_takes(catalog: CatalogDatabase) -> pd.DataFrame:
    """Every delivered take, newest take of each shot first."""
    return catalog.read(TAKES_SQL)


def video_src(path: str, page_dir: Path) -> str | None:
    """Where the page's <video> finds the file: relative for local files, the URL for http(s); None for
    object-store URIs a browser cannot open (the page then names the URI)."""
    if path.startswith(("http://", "https://")):
        return path
    if "://" in path:
        return None
    return quote(os.path.relpath(Path(path).resolve(), page_dir.resolve()).replace(os.sep, "/"))


def render_page(takes: pd.DataFrame, page_dir: Path, dagster_url: str) -> str:
    spent = float(pd.to_numeric(takes["cost_usd"], errors="coerce").fillna(0).sum()) if len(takes) else 0.0
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>hailuo review</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>hailuo review</h1><p>{len(takes)} take(s) of {takes['shot_id'].nunique() if len(takes) else 0} "
        f"shot(s); ${spent:.2f} paid for them.</p>",
    ]
    for row in takes.to_dict("records"):
        parts.append(take_section(row, page_dir, dagster_url))
    parts.append("</body></html>")
    return "\n".join(parts)


def take_section(row: Mapping[Hashable, Any], page_dir: Path, dagster_url: str) -> str:
    e = html.escape
    shot, take, path, run_id = str(row["shot_id"]), int(row["take"]), str(row["path"]), row["run_id"]
    src = video_src(path, page_dir)
    poster = poster_data_uri(path)  # an off-screen player shows its first frame, not black
    player = (
        f"<video controls preload='metadata' poster='{e(poster)}' src='{e(src)}'></video>"
        if src is not None
        else f"<p>stored at <code>{e(path)}</code></p>"
    )
    run = "none"
    if isinstance(run_id, str) and run_id:
        run = f"<a href='{e(dagster_url.rstrip('/'))}/runs/{e(run_id)}'>{e(run_id[:8])}</a>"
    cost = float(row["cost_usd"]) if pd.notna(row["cost_usd"]) else 0.0
    prompt = row["prompt"] if isinstance(row["prompt"], str) else ""
    return (
        f"<section id='{e(shot)}-take{take}'>{player}<dl>"
        f"<dt>shot</dt><dd><b>{e(shot)}</b>, take {take}</dd>"
        f"<dt>prompt</dt><dd class='prompt'>{e(prompt)}</dd>"
        f"<dt>duration</dt><dd>{float(row['measured_seconds']):.2f} s (asked {int(row['requested_seconds'])} s), "
        f"{int(row['width'])}x{int(row['height'])}</dd>"
        f"<dt>cost</dt><dd>${cost:.2f} (fal request {e(str(row['request_id']))})</dd>"
        f"<dt>run</dt><dd>{run}</dd></dl></section>"
    )


def poster_data_uri(path: str) -> str:
    """The take's poster inlined (the page is shared offline); empty when the video is not a local file."""
    import base64

    from hailuo_pipeline.generation.delivery import poster_or_none

    if "://" in path or not Path(path).is_file():
        return ""
    poster = poster_or_none(Path(path))
    return f"data:image/jpeg;base64,{base64.b64encode(poster).decode()}" if poster else ""


def write_review(catalog: CatalogDatabase, out: Path, dagster_url: str) -> tuple[Path, int]:
    """Write the page (atomically: a half-written page is never served); its path and number of takes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    takes = review_takes(catalog)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(render_page(takes, out.parent, dagster_url), encoding="utf-8")
    partial.replace(out)
    return out, len(takes)
