"""The one fetch policy, for every URL the pipeline fetches whoever named it: a manifest's image, the video URL in
fal's result, a redirect of either. http(s) only; loopback, link-local (cloud metadata), private, reserved and
multicast addresses refused unless allowed; every redirect checked again as if it were the first URL.

Allowed hosts come from one setting (HAILUO_ALLOWED_PRIVATE_HOSTS: `host` or `host:port`, comma-separated; `*`
for any) plus the host fal_client is configured to talk to (FAL_QUEUE_RUN_HOST: configuration, trusted like
the key it is sent). A host could still resolve differently between the check and the connection (DNS
rebinding): the policy narrows what an answer can reach; it is not a network boundary."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_REDIRECTS = 5
MAX_URL_CHARS = 4096


@dataclass(frozen=True)
class FetchPolicy:
    allowed: frozenset[str] = frozenset()  # "host" or "host:port", lower case; "*": any host

    @classmethod
    def allowing(cls, *lists: str | Iterable[str]) -> FetchPolicy:
        """From comma-separated lists (a setting) or iterables of entries."""
        entries: set[str] = set()
        for found in lists:
            items = found.split(",") if isinstance(found, str) else found
            entries |= {item.strip().lower() for item in items if item.strip()}
        return cls(frozenset(entries))

    def allows(self, host: str, port: int | None) -> bool:
        host = host.lower()
        shown = f"[{host}]" if ":" in host else host
        return "*" in self.allowed or host in self.allowed or (port is not None and f"{shown}:{port}" in self.allowed)

    def problem(self, url: str, what: str = "the URL") -> str | None:
        """Why `url` may not be fetched (scheme, host, the addresses its host resolves to), or None. `what`
        names the URL in the user's terms ("the image URL", "fal's video URL")."""
        if len(url) > MAX_URL_CHARS:
            return f"{what} is longer than {MAX_URL_CHARS} characters"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return f"{what} is not a valid URL"
        if parts.scheme not in ("http", "https"):
            return f"{what} uses the {parts.scheme or 'missing'}: scheme (only http and https are fetched)"
        host = parts.hostname
        if not host:
            return f"{what} has no host"
        if self.allows(host, port or (443 if parts.scheme == "https" else 80)):
            return None
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)}
        except (UnicodeError, OSError):
            return f"{what}'s host {host} does not resolve"
        for address in sorted(addresses):
            ip = ipaddress.ip_address(str(address).split("%")[0])
            if not ip.is_global or ip.is_multicast:
                return f"{what}'s host {host} is a local or private address ({ip})"
        return None


def queue_host_entry(queue_host: str) -> str:
    """FAL_QUEUE_RUN_HOST as an allowed entry: the exact host and port fal_client talks to (default https)."""
    host = queue_host.strip().removeprefix("https://").removeprefix("http://").split("/")[0].lower()
    return host if not host or ":" in host.rsplit("]", 1)[-1] else f"{host}:443"
