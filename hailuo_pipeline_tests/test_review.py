"""Looking, not reading: each batch's contact sheet in the UI, and `hailuo review`'s page of every take."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from dagster import AssetKey, DagsterInstance
from PIL import Image

from hailuo_pipeline.cli import main
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.review.contact_sheet import COLUMNS, MAX_TILES, TILE_WIDTH, Tile, contact_sheet
from hailuo_pipeline.video.poster import poster_jpeg
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import write_shots

HOSTILE_PROMPT = "<script>alert('x')</script> & a \"quoted\" </section> prompt"


def observations(instance: DagsterInstance) -> list:
    records = instance.fetch_observations(AssetKey("hailuo_video"), limit=100).records
    return [r.asset_observation for r in records]


def sheet_image(observation) -> Image.Image:
    markdown = observation.metadata["contact_sheet"].value
    encoded = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1)
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_each_batch_leaves_one_contact_sheet_of_its_new_videos(workspace, emulator):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"shot {i}"} for i in range(1, 4)])
    first = materialize()
    assert first.succeeded == ["s1", "s2", "s3"]
    instance = DagsterInstance.get()
    [sheet] = observations(instance)
    assert sheet.description == f"contact sheet of run {first.run_ids[0]}"
    assert sheet.metadata["videos"].value == 3
    assert sheet.metadata["cost_usd"].value == "$0.57"  # three 6 s videos at $0.19
    image = sheet_image(sheet)
    assert image.width == 3 * TILE_WIDTH and image.height > 0

    again = materialize(["s1"])  # reused: nothing new to look at, so no second sheet
    assert again.succeeded == ["s1"]
    assert len(observations(instance)) == 1


def test_a_large_batch_shows_its_first_tiles_and_says_how_many_more(workspace, emulator):
    write_shots(workspace, [{"shot_id": "one", "prompt": "p"}])
    assert materialize().succeeded == ["one"]
    [path] = [Path(p) for (p,) in query(workspace, "SELECT path FROM videos")]
    poster = poster_jpeg(path)
    tiles = [Tile(poster, f"shot-{i:03d}", 1, 6.0, 0.19) for i in range(MAX_TILES + 5)]
    image = Image.open(io.BytesIO(contact_sheet(tiles)))
    rows_of_tiles = MAX_TILES // COLUMNS
    assert image.width == COLUMNS * TILE_WIDTH
    assert image.height > rows_of_tiles * (TILE_WIDTH * 9 // 16)  # the tiles, plus the "and 5 more" line
    single = Image.open(io.BytesIO(contact_sheet(tiles[:1])))
    assert single.width == TILE_WIDTH


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.videos: list[str] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "video":
            self.videos.append(values["src"] or "")
        elif tag == "a":
            self.links.append(values["href"] or "")
        elif tag == "script":
            self.scripts += 1


def test_review_page_plays_every_take_and_escapes_what_the_manifest_says(workspace, emulator, capsys, monkeypatch):
    write_shots(workspace, [{"shot_id": "a", "prompt": HOSTILE_PROMPT}, {"shot_id": "b", "prompt": "calm sea"}])
    first = materialize()
    assert first.succeeded == ["a", "b"]
    assert materialize(["a"], new_take=True).succeeded == ["a"]  # a second, paid take of a

    assert main(["review", "--dagster-url", "http://dagster.example:3000/"]) == 0
    page = workspace / "review" / "index.html"
    assert f"3 take(s) in {page}" in capsys.readouterr().out
    text = page.read_text()
    parsed = Links()
    parsed.feed(text)
    assert parsed.scripts == 0 and HOSTILE_PROMPT not in text  # the prompt is shown as text, never run
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "$0.57 paid" in text
    assert len(parsed.videos) == 3
    assert text.count("poster='data:image/jpeg;base64,") == 3  # off-screen players show a frame, not black
    for src in parsed.videos:  # each player finds its file from where the page is
        assert (page.parent / unquote(src)).resolve().is_file()
    run_links = {link.rsplit("/", 1)[-1] for link in parsed.links}
    assert set(first.run_ids) <= run_links
    assert all(link.startswith("http://dagster.example:3000/runs/") for link in parsed.links)
    assert text.index("a-take2") < text.index("a-take1")  # newest take first
    monkeypatch.setenv("HAILUO_DAGSTER_URL", "http://ui.example:4000")  # no flag: the setting, not localhost:3000
    assert main(["review"]) == 0
    assert "http://ui.example:4000/runs/" in page.read_text() and "localhost:3000" not in page.read_text()
