"""Bad inputs are refused before any request, each with a message that names the shot and the fix."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from PIL import Image

from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline.defs.headless import materialize, sync
from hailuo_pipeline.defs.partitions import shots_partitions
from hailuo_pipeline.settings import Settings
from hailuo_pipeline.shots.manifest import ManifestError, read_manifest
from hailuo_pipeline_tests.helpers import query, reason
from hailuo_pipeline_tests.shots import make_image, write_shots


def jpeg_bytes(size=(640, 360)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 30, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


def build_bad_images(images: Path) -> dict[str, tuple[str, str]]:
    """shot_id -> (image path relative to the manifest, words the refusal must contain)."""
    images.mkdir(parents=True, exist_ok=True)
    (images / "truncated.jpg").write_bytes(jpeg_bytes()[:600])
    make_image(images / "cmyk.jpg", mode="CMYK")
    make_image(images / "alpha.png", fmt="PNG", mode="RGBA")
    make_image(images / "anim.gif", fmt="GIF")
    make_image(images / "tiny.jpg", size=(64, 64))
    make_image(images / "short.png", size=(1000, 300), fmt="PNG")
    make_image(images / "wide.jpg", size=(2000, 310))
    make_image(images / "tall.png", size=(320, 1000), fmt="PNG")
    (images / "notes.jpg").write_text("this is a text file, not an image\n")
    big = Image.frombytes("RGB", (3000, 3400), os.urandom(3000 * 3400 * 3))  # ~30 MB as an uncompressed PNG
    big.save(images / "huge.png", format="PNG", compress_level=0)
    make_image(images / "bmp.bmp", fmt="BMP")
    (images / "empty.jpg").write_bytes(b"")
    return {
        "truncated": ("images/truncated.jpg", "cannot be decoded"),
        "cmyk": ("images/cmyk.jpg", "colour mode is CMYK"),
        "alpha": ("images/alpha.png", "alpha channel"),
        "gif": ("images/anim.gif", "GIF"),
        "tiny": ("images/tiny.jpg", "64x64"),
        "short": ("images/short.png", "short side must be over 300"),
        "wide": ("images/wide.jpg", "2:5 to 5:2"),
        "tall": ("images/tall.png", "2:5 to 5:2"),
        "textfile": ("images/notes.jpg", "cannot be decoded"),
        "huge": ("images/huge.png", "under 20 MB"),
        "bmp": ("images/bmp.bmp", "BMP"),
        "empty-file": ("images/empty.jpg", "cannot be decoded"),
        "missing-file": ("images/nowhere.jpg", "does not exist"),
        "no-image": ("", "image column is empty"),
    }


BAD_FIELDS = {
    "empty-prompt": ({"prompt": ""}, "prompt is empty"),
    "blank-prompt": ({"prompt": "  \t "}, "prompt is empty"),
    "long-prompt": ({"prompt": "x" * 2001}, "2001 characters"),
    "duration-7": ({"duration": "7"}, "set duration to 6 or 10"),
    "duration-word": ({"duration": "ten"}, "set duration to 6 or 10"),
    "optimizer-maybe": ({"prompt_optimizer": "maybe"}, "write true or false"),
}


def test_every_bad_shot_is_refused_before_any_submission(workspace, emulator):
    bad_images = build_bad_images(workspace / "images")
    rows = [{"shot_id": "good", "prompt": "the one good shot"}]
    rows += [{"shot_id": sid, "prompt": "p", "image": image} for sid, (image, _) in bad_images.items()]
    for sid, (fields, _) in BAD_FIELDS.items():
        make_image(workspace / "images" / f"{sid}.jpg")
        rows.append({"shot_id": sid, "prompt": "p", "image": f"images/{sid}.jpg", **fields})
    write_shots(workspace, rows)
    assert len(rows) - 1 >= 20

    summary = materialize()

    assert summary.succeeded == ["good"]
    expected = {sid: words for sid, (_, words) in bad_images.items()} | {
        sid: words for sid, (_, words) in BAD_FIELDS.items()
    }
    assert set(summary.failed) == set(expected)
    for shot_id, words in expected.items():
        message = reason(summary, shot_id)  # named by its key, once; cause and fix both present
        assert words in message and f"shot '{shot_id}'" not in message, (shot_id, message)
        assert "Fix:" in message, (shot_id, message)
    stats = emulator.stats()
    assert stats["submissions"] == 1 and stats["calls"]["submit"] == 1
    assert query(workspace, "SELECT shot_id FROM requests") == [("good",)]

    # what Dagster shows: a refused input fails itself and the video, never the other, good input
    status = partition_status(DagsterInstance.get(), ["good", *expected])
    assert {asset: marks["good"] for asset, marks in status.items()} == dict.fromkeys(status, "MATERIALIZED")
    for sid in bad_images:
        assert (status["source_image"][sid], status["prompt"][sid], status["hailuo_video"][sid]) == (
            "FAILED",
            "MATERIALIZED",  # the prompt was fine, and is checked first
            "FAILED",
        ), sid
    for sid in BAD_FIELDS:
        assert (status["prompt"][sid], status["hailuo_video"][sid]) == ("FAILED", "FAILED"), sid
        assert status["source_image"][sid] is None, sid  # not checked, so neither good nor failed


def partition_status(instance: DagsterInstance, shots: list[str]) -> dict[str, dict[str, str | None]]:
    found = {}
    for asset in ("source_image", "prompt", "hailuo_video"):
        marks = instance.get_status_by_partition(AssetKey(asset), shots, shots_partitions) or {}
        found[asset] = {s: marks[s].value if marks.get(s) else None for s in shots}
    return found


def test_materializing_the_video_alone_materializes_its_inputs_in_the_same_step(workspace, emulator):
    """The UI's "Materialize" on hailuo_video alone: the shot's inputs are validated and materialized too."""
    write_shots(workspace, [{"shot_id": "v", "prompt": "only the video was selected"}])
    with DagsterInstance.get() as instance:
        sync(instance, Settings.from_env())
        job = build_definitions().resolve_job_def("shot_videos")
        result = job.execute_in_process(instance=instance, partition_key="v")
        assert result.success
        assert partition_status(instance, ["v"]) == {
            "source_image": {"v": "MATERIALIZED"},
            "prompt": {"v": "MATERIALIZED"},
            "hailuo_video": {"v": "MATERIALIZED"},
        }
        assert result.dagster_run.job_name == "shot_videos"  # the job that selects hailuo_video alone
    assert emulator.stats()["submissions"] == 1


def test_missing_columns_name_the_header(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text("shot_id,picture,prompt\na,x.jpg,p\n")
    with pytest.raises(ManifestError, match="missing column\\(s\\) image"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("shot_id", "words"),
    [
        ("../etc", "path separators"),
        ("a/b", "path separators"),
        ("a,b", "no commas"),
        ("bell\x07", "control character"),
        ("", "empty"),
        ("-leading", "start with a letter or digit"),
    ],
)
def test_unsafe_ids_are_refused_with_their_row(tmp_path, shot_id, words):
    path = tmp_path / "shots.csv"
    quoted = '"' + shot_id.replace('"', '""') + '"'
    path.write_text(f"shot_id,image,prompt\nok,x.jpg,p\n{quoted},x.jpg,p\n")
    manifest = read_manifest(path)
    assert list(manifest.shots) == ["ok"]
    (error,) = manifest.errors
    assert error.row == 3 and words in str(error) and "row 3" in str(error)


def test_a_duplicate_id_is_refused_on_its_second_row_and_the_first_kept(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text("shot_id,image,prompt\na,x.jpg,p\nb,y.jpg,q\na,z.jpg,r\n")
    manifest = read_manifest(path)
    assert list(manifest.shots) == ["a", "b"] and manifest.shots["a"].image == "x.jpg"
    (error,) = manifest.errors
    assert "row 4" in str(error) and "first used on row 2" in str(error)


def test_defaults_for_optional_columns(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text("shot_id,image,prompt\na,x.jpg,hello\n")
    shot = read_manifest(path).shots["a"]
    assert (shot.duration, shot.prompt_optimizer, shot.image_path()) == ("6", "true", tmp_path / "x.jpg")
