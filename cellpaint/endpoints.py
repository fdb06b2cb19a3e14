"""Where this machine's servers may send requests: URLs reduced to (scheme, host, port), and
loopback. The UI's pipeline mode and the local webhook receiver compare origins with these."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

Origin = tuple[str, str, int]


def origin(url: object, *, bare: bool = False) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the port filled in; None for any other scheme, a
    user:password@ part, a bad port, whitespace or control characters, and (bare=True) anything
    after the host and port but a single "/"."""
    # urlsplit silently drops some whitespace, so "http://a\tb" would otherwise parse as "http://ab"
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    if bare and (parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#"))):
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1); names other than localhost are not looked up."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
