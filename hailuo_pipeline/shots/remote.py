"""Fetching a shot's image from an http(s) URL, as an untrusted server would serve it: one total deadline,
a streamed size cap (the model's limit), the one fetch policy (`fetch_policy.py`: no loopback, link-local,
private or reserved addresses unless allowed), and every redirect checked again as if it were the first URL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from hailuo_pipeline import model_limits as limits
from hailuo_pipeline.fetch_policy import MAX_REDIRECTS, FetchPolicy
from hailuo_pipeline.redact import describe_error, redact


@dataclass(frozen=True)
class RemotePolicy:
    # hosts allowed although they are loopback, link-local, private or reserved ("*": any host)
    private_hosts: frozenset[str] = frozenset()
    deadline_seconds: float = 60.0  # for the whole fetch, redirects included
    max_bytes: int = limits.MAX_IMAGE_BYTES

    @classmethod
    def allowing(cls, hosts: str) -> RemotePolicy:
        """From a comma-separated list, as HAILUO_ALLOWED_PRIVATE_HOSTS holds it."""
        return cls(FetchPolicy.allowing(hosts).allowed)

    @property
    def hosts(self) -> FetchPolicy:
        return FetchPolicy(self.private_hosts)


class RemoteImageError(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem = problem
        self.fix = fix


def fetch_image(url: str, policy: RemotePolicy) -> bytes:
    """The image's bytes, or RemoteImageError naming what went wrong and the fix."""
    deadline = time.monotonic() + policy.deadline_seconds
    shown = redact(url)
    with httpx.Client(follow_redirects=False, timeout=min(30.0, policy.deadline_seconds)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            problem = policy.hosts.problem(url, "the image URL")
            if problem:
                raise RemoteImageError(
                    problem,
                    "use a public http(s) URL, or a local file"
                    + ("" if "scheme" in problem else "; HAILUO_ALLOWED_PRIVATE_HOSTS lists allowed ones"),
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
                    f"the image URL {shown} could not be fetched ({describe_error(exc)})", "check the URL"
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
