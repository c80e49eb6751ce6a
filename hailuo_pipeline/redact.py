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
    found: set[str] = set()
    for name in ("FAL_KEY", "FAL_ADMIN_KEY"):
        raw = os.environ.get(name, "")
        found |= {raw, raw.strip(), *raw.strip().split(":")}
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


# what went wrong, in words, by the exception's class or one of its bases (matched by name: the libraries
# stay unimported here)
_ERROR_WORDS = {
    "ConnectTimeout": "connecting timed out",
    "ConnectError": "the connection could not be made",
    "ReadTimeout": "the server stopped answering (timed out)",
    "WriteTimeout": "sending timed out",
    "PoolTimeout": "no connection was free in time",
    "RemoteProtocolError": "the server broke off its answer",
    "ReadError": "the connection broke while reading the answer",
    "WriteError": "the connection broke while sending",
    "SubmitReplayRefused": "the connection broke before fal's answer came back",
    "SSLError": "the server's TLS certificate could not be verified",
    "SSLCertVerificationError": "the server's TLS certificate could not be verified",
    "JSONDecodeError": "the answer was not JSON",
    "UnidentifiedImageError": "it is not an image Pillow can read (JPEG, PNG or WebP expected)",
    "DecompressionBombError": "it is too large to decode safely",
    "TimeoutError": "it timed out",
    "CancelledError": "it was interrupted",
    "ConnectionResetError": "the connection was reset",
    "ConnectionRefusedError": "the connection was refused",
    "BrokenResourceError": "the connection broke",
}
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def describe_error(error: BaseException) -> str:
    """An exception as a user reads it: what happened, in words, redacted; never its class or a memory
    address. Our own errors carry their words; others are named by what they mean."""
    for kind in type(error).__mro__:
        if kind.__name__ in _ERROR_WORDS:
            return _ERROR_WORDS[kind.__name__]
    if isinstance(error, KeyError) and error.args:
        return redact(f"the field {str(error.args[0])[:80]} was missing")
    text = _OBJECT_REPR.sub("the data", str(error)).strip()
    if not text:
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__).lower()
        return words.removesuffix(" error") + " error" if "error" in words else words
    return redact(text)[:500]
