"""How a destination host goes on the wire: the one spelling the API checks and stores and the edge sends.

A contract between ``api`` (which checks a destination's host and stores the URL) and ``redirect``
(which sends it in ``Location``): both call these functions, so the host that was checked is the
host that is sent. A leaf module: stdlib and the PyPI ``idna`` package only.

The mapping is what browsers apply to a URL's host (WHATWG URL "domain to ASCII"): UTS #46
non-transitional processing, then IDNA 2008 A-labels. So ``１２７.０.０.１`` is ``127.0.0.1``,
``ｅｖｉｌ。com`` is ``evil.com`` and ``faß.de`` is ``xn--fa-hia.de`` (Python's own ``idna``
codec is IDNA 2003: it would send ``fass.de``, another host than the one checked).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import idna


def ascii_host(host: str) -> str | None:
    """``host`` in the ASCII form a browser connects to (lower case), or None when it has none."""
    if host.isascii():
        return host.lower()
    try:
        # std3_rules=False: "_" stays allowed, as browsers allow it; labels that are ASCII after the
        # mapping are kept as they are (A-label syntax is what the destination checks then judge).
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = [label if label.isascii() else idna.alabel(label).decode("ascii") for label in mapped.split(".")]
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    out = ".".join(labels).lower()
    return out if out.isascii() else None


def ascii_url(url: str) -> str | None:
    """``url`` with its host in ``ascii_host``'s form (the rest as given); None if it has no host or no such form."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    netloc = parts.netloc
    if netloc.isascii() and netloc == netloc.lower():
        return url
    mapped = ascii_host(host)
    if mapped is None:
        return None
    if ":" in mapped:
        mapped = f"[{mapped}]"
    userinfo, at, _ = netloc.rpartition("@")
    new_netloc = f"{userinfo}{at}{mapped}" + (f":{port}" if port is not None else "")
    # replace the netloc where it stands, so nothing else of the URL is re-spelled
    start = url.find("//" + netloc)
    if start < 0:
        return parts._replace(netloc=new_netloc).geturl()
    return url[: start + 2] + new_netloc + url[start + 2 + len(netloc) :]
