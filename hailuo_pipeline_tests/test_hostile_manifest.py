"""Hostile manifests, keys and secrets, refused at the root: a strict CSV reader that names the line, a key
checked before any request, and one redaction function for everything logged or stored."""

from __future__ import annotations

import pytest

from hailuo_pipeline.fal.config import FalKeyError, checked_fal_key
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import ManifestError, read_manifest
from hailuo_pipeline.shots.validation import ShotInputError, validate_duration

HEADER = "shot_id,image,prompt,duration\n"

BROKEN_FILES = [
    # (case, bytes of shots.csv, words the error must hold)
    ("unclosed quote", (HEADER + 'a,x.jpg,"never closed,6\nb,y.jpg,p,10\nc,z.jpg,p,6\n').encode(), "line 2"),
    ("cp1252", (HEADER + "a,x.jpg,caf\xe9 au lait,6\n").encode("cp1252"), "save it as UTF-8"),
    ("latin-1 on line 3", (HEADER + "a,x.jpg,p,6\nb,y.jpg,na\xefve,6\n").encode("latin-1"), "line 3"),
    ("NUL byte", (HEADER + "a,x.jpg,p\x00p,6\n").encode(), "line 2"),
    ("field over the limit", (HEADER + "a,x.jpg," + "p" * 200_000 + ",6\n").encode(), "line 2"),
    ("duplicate column", b"shot_id,image,prompt,prompt\na,x.jpg,p,q\n", "prompt"),
    ("missing column", b"shot_id,picture,prompt\na,x.jpg,p\n", "image"),
    ("binary junk", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "UTF-8"),
]


@pytest.mark.parametrize(("case", "data", "words"), BROKEN_FILES, ids=[c[0] for c in BROKEN_FILES])
def test_a_manifest_that_cannot_be_read_whole_is_refused_naming_the_line(tmp_path, case, data, words):
    path = tmp_path / "shots.csv"
    path.write_bytes(data)
    with pytest.raises(ManifestError) as refused:
        read_manifest(path)
    assert words in str(refused.value), (case, str(refused.value))
    assert "Traceback" not in str(refused.value)


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("UTF-16 with BOM", (HEADER + "a,x.jpg,café,6\n").encode("utf-16")),
        ("UTF-8 with BOM", (HEADER + "a,x.jpg,café,6\n").encode("utf-8-sig")),
        ("CRLF line ends", (HEADER + "a,x.jpg,café,6\n").replace("\n", "\r\n").encode()),
    ],
)
def test_encodings_spreadsheets_write_are_read(tmp_path, case, data):
    path = tmp_path / "shots.csv"
    path.write_bytes(data)
    manifest = read_manifest(path)
    assert list(manifest.shots) == ["a"] and manifest.shots["a"].prompt == "café", case


def test_a_quoted_newline_inside_a_prompt_is_one_field(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text(HEADER + 'a,x.jpg,"line one\nline two",6\nb,y.jpg,p,10\n')
    manifest = read_manifest(path)
    assert list(manifest.shots) == ["a", "b"] and manifest.shots["a"].prompt == "line one\nline two"


def test_a_duplicate_id_keeps_the_first_row_and_names_the_second(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text(HEADER + "a,x.jpg,first,6\nb,y.jpg,q,6\na,z.jpg,second,10\n")
    manifest = read_manifest(path)
    assert list(manifest.shots) == ["a", "b"] and manifest.shots["a"].prompt == "first"
    (error,) = manifest.errors
    assert error.row == 4 and "first used on row 2" in str(error)


@pytest.mark.parametrize("duration", ["1_0", "6.0", "06", "+6", "６", "10s", "1e1", "-6", "6 6"])
def test_durations_are_matched_exactly(duration):
    with pytest.raises(ShotInputError, match="set duration to 6 or 10"):
        validate_duration("s", duration)


@pytest.mark.parametrize("duration", ["6", "10", " 10 "])
def test_offered_durations_pass(duration):
    assert validate_duration("s", duration) in (6, 10)


SECRET = "a1b2c3d4-0000-4000-8000-e5f6a7b8c9d0:0123456789abcdef0123456789abcdef"
LINK_SECRETS = (
    "AKIAIOSFODNN7EXAMPLE",
    "8f1c0ffee5ab1e",
    "FwoGZXIvYXdzEJr",
    "svc@proj.iam",
    "AbC%2B12x%3D",
    "Zm9vYmFy~x",
    "t0k3n",
    "k3y-v4lue",
)
PRESIGNED = {  # the image links of a manifest: each carries its credential in its query
    "S3": "https://b.s3.amazonaws.com/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F"
    "20261130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261130T000000Z&X-Amz-Expires=3600&X-Amz-Security-Token="
    "FwoGZXIvYXdzEJr&X-Amz-SignedHeaders=host&X-Amz-Signature=8f1c0ffee5ab1e",
    "GCS": "https://storage.googleapis.com/b/a.png?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=svc@proj.iam"
    "&X-Goog-Signature=8f1c0ffee5ab1e",
    "Azure SAS": "https://acct.blob.core.windows.net/c/a.webp?sv=2022-11-02&se=2026-12-01&sr=b&sp=r&sig=AbC%2B12x%3D",
    "CloudFront": "https://d1.cloudfront.net/a.jpg?Expires=1790000000&Signature=Zm9vYmFy~x&Key-Pair-Id=K2JCJMDEHX",
    "token and key": "https://cdn.example.com/a.jpg?token=t0k3n&w=640&API_KEY=k3y-v4lue",
}


@pytest.mark.parametrize(
    "key",
    [f"{SECRET} ", f"{SECRET}\n", f"{SECRET}\r\n", f"\t{SECRET}", f"{SECRET[:10]} {SECRET[10:]}", f"{SECRET}\x00", ""],
    ids=["trailing space", "LF", "CRLF", "leading tab", "inner space", "NUL", "empty"],
)
def test_a_badly_pasted_key_is_refused_before_any_request_and_shown_masked(key):
    with pytest.raises(FalKeyError) as refused:
        checked_fal_key(key)
    message = str(refused.value)
    assert "FAL_KEY" in message and SECRET not in message and SECRET[10:] not in message


def test_a_well_formed_key_passes():
    assert checked_fal_key(SECRET) == SECRET


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"LocalProtocolError(\"Illegal header value b'Key {SECRET} '\")", "Illegal header value"),
        ("GET https://alice:hunter2-secret@images.example.com/a.jpg failed", "images.example.com/a.jpg"),
        ("image_url data:image/png;base64," + "iVBORw0KGgo" * 40, "data:image/png;base64,"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Authorization: Bearer"),
        *((f"shot s1: image {link} answered 403", link.split("?")[0]) for link in PRESIGNED.values()),
    ],
    ids=["fal key", "URL user:password", "data URI", "bearer token", *PRESIGNED],
)
def test_one_redaction_function_masks_every_kind_of_secret(monkeypatch, text, kept):
    monkeypatch.setenv("FAL_KEY", SECRET + " ")
    out = redact(text)
    assert kept in out
    secrets = (SECRET, "hunter2-secret", "iVBORw0KGgoiVBORw0KGgo", "eyJhbGciOiJIUzI1NiJ9.payload.sig", *LINK_SECRETS)
    assert [secret for secret in secrets if secret in out] == []
    assert redact(out) == out  # what is stored redacted stays as it is when it passes again


def test_a_links_plain_query_is_kept():
    link = "https://cdn.example.com/designs/a.jpg?design=blue&width=640&Key-Pair-Id=K2JCJMDEHXQW5F&Expires=1790000000"
    assert redact(link) == link
