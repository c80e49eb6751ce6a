"""Fetching a shot's image from an http(s) URL, as an untrusted server would serve it: one total deadline,
a streamed size cap (the model's limit), a host policy (no loopback, link-local, private or reserved
addresses unless allowed), and every redirect checked again as if it were the first URL.

A host could still resolve differently between our check and the connection (DNS rebinding); the policy
narrows what a manifest cell can reach, it does not replace a network boundary."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from hailuo_pipeline import model_limits as limits
from hailuo_pipeline.redact import redact

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RemotePolicy:
    # hosts allowed although they are loopback, link-local, private or reserved ("*": any host)
    private_hosts: frozenset[str] = frozenset()
    deadline_seconds: float = 60.0  # for the whole fetch, redirects included
    max_bytes: int = limits.MAX_IMAGE_BYTES

    @classmethod
    def allowing(cls, hosts: str) -> RemotePolicy:
        """From a comma-separated list, as HAILUO_ALLOWED_PRIVATE_IMAGE_HOSTS holds it."""
        return cls(frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()))


class RemoteImageError(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem = problem
        self.fix = fix


def host_problem(url: str, private_hosts: frozenset[str]) -> str | None:
    """Why this URL may not be fetched (scheme, host, the addresses its host resolves to), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"the image URL's scheme {parts.scheme!r} is not supported (only http and https)"
    host = parts.hostname
    if not host:
        return "the image URL has no host"
    if "*" in private_hosts or host.lower() in private_hosts:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError) as exc:
        return f"the image URL's host {host!r} does not resolve ({exc})"
    for address in sorted(addresses):
        ip = ipaddress.ip_address(str(address).split("%")[0])
        if not ip.is_global or ip.is_multicast:
            return f"the image URL's host {host!r} is a local or private address ({ip})"
    return None


def fetch_image(url: str, policy: RemotePolicy) -> bytes:
    """The image's bytes, or RemoteImageError naming what went wrong and the fix."""
    deadline = time.monotonic() + policy.deadline_seconds
    shown = redact(url)
    with httpx.Client(follow_redirects=False, timeout=min(30.0, policy.deadline_seconds)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            problem = host_problem(url, policy.private_hosts)
            if problem:
                raise RemoteImageError(
                    problem,
                    "use a public http(s) URL, or a local file"
                    + ("" if "scheme" in problem else "; HAILUO_ALLOWED_PRIVATE_IMAGE_HOSTS lists allowed ones"),
                )
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise RemoteImageError(
                            f"the image URL {shown} answered HTTP {response.status_code}", "check the URL"
                        )
                    return _read_capped(response, policy, deadline, shown)
            except httpx.HTTPError as exc:
                raise RemoteImageError(
                    f"the image URL {shown} could not be fetched ({redact(exc)})", "check the URL"
                ) from exc
    raise RemoteImageError(f"the image URL {shown} redirects more than {MAX_REDIRECTS} times", "give the final URL")


def _read_capped(response: httpx.Response, policy: RemotePolicy, deadline: float, shown: str) -> bytes:
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) >= policy.max_bytes:
        raise RemoteImageError(
            f"the image at {shown} is {int(announced) / 2**20:.1f} MB; the model takes images under 20 MB",
            "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
        )
    body = bytearray()
    for chunk in response.iter_bytes():  # as the bytes arrive: a slow drip meets the deadline
        body += chunk
        if len(body) >= policy.max_bytes:
            raise RemoteImageError(
                f"the image at {shown} is 20 MB or more; the model takes images under 20 MB",
                "re-encode it smaller (e.g. JPEG quality 90) or downscale it",
            )
        if time.monotonic() > deadline:
            raise RemoteImageError(
                f"the image at {shown} took longer than {policy.deadline_seconds:.0f} s to download",
                "serve it from a faster host, or use a local file",
            )
    return bytes(body)
