"""The one redaction function: everything the pipeline logs or stores that may carry a secret passes here.

Secrets: the fal key (from FAL_KEY, whatever its formatting), credentials in URLs (`https://user:pass@host`, and
the signatures, tokens and keys of presigned links in their query: S3's X-Amz-Signature, GCS's X-Goog-Signature,
Azure's SAS sig, CloudFront's Signature, `?token=`, `?api_key=`), authorization header values, and data URIs (an
inlined image is data, not a message)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@")
# a query parameter whose name ends like a credential's: its value goes, the name stays (the link stays readable)
_QUERY_CREDENTIAL = re.compile(
    r"(?i)([?&;][\w.-]*(?:signature|sig|token|credential|key|secret|password|passwd)=)[^&#\s'\"<>]+"
)
_AUTH_VALUE = re.compile(r"(?i)\b(Key|Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=:-]{6,}")
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w.+-]+=[\w.+-]+)*(;base64)?,[A-Za-z0-9+/=%\s]{16,}")


def secrets_in_environment() -> list[str]:
    """The fal key as it is set, and as it would be sent (stripped), and its parts: a key formatted as
    'id:secret' leaks its secret half in a message that splits it."""
    raw = os.environ.get("FAL_KEY", "")
    found = {raw, raw.strip(), *raw.strip().split(":")}
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def redact(text: object, secrets: Iterable[str] | None = None) -> str:
    """`text` (any object's str) with every secret masked. Safe on text that holds none."""
    out = str(text)
    for secret in secrets_in_environment() if secrets is None else secrets:
        if secret:
            out = out.replace(secret, MASK)
            out = out.replace(repr(secret)[1:-1], MASK)  # as an exception's repr escapes it
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", out)
    out = _QUERY_CREDENTIAL.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _AUTH_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", out)
    return _DATA_URI.sub(lambda m: f"data:{m.group(1) or ''}{m.group(3) or ''},{MASK}", out)


def masked(secret: str) -> str:
    """How a secret may be shown to its owner: its first four characters and its length."""
    return f"{secret[:4]}{MASK} ({len(secret)} characters)"
