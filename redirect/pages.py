"""The few HTML pages the edge shows instead of a redirect. Every dynamic value is escaped."""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}p{line-height:1.5}code{word-break:break-all}"
    "input,button{font-size:1rem;padding:.4rem .6rem}.error{color:#b00020}"
)


def _page(title: str, body: str, *, robots: bool = False) -> bytes:
    noindex = "" if robots else '<meta name="robots" content="noindex">'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{noindex}<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    ).encode()


NOT_FOUND = _page("Link not found", "<p>This short link does not exist, or it was removed.</p>")
EXPIRED = _page("Link expired", "<p>This short link has expired and no longer leads anywhere.</p>")
BAD_REQUEST = _page("Bad request", "<p>This address is not a valid short link.</p>")
TOO_LONG = _page("Address too long", "<p>This address is longer than any short link.</p>")
TOO_MANY = _page("Too many attempts", "<p>Too many password attempts for this link. Try again later.</p>")
BUSY = _page("Server busy", "<p>Too many passwords are being checked right now. Try again in a moment.</p>")
UNAVAILABLE = _page("Temporarily unavailable", "<p>This link cannot be looked up right now. Try again shortly.</p>")
NOT_ALLOWED = _page("Method not allowed", "<p>Short links answer GET and HEAD.</p>")


def root_page(domain: str) -> bytes:
    """What ``/`` of a domain shows when it has no root URL."""
    return _page(domain, f"<p><code>{escape(domain)}</code> serves short links.</p>")


def password_page(error: str = "") -> bytes:
    """The unlock form; posts back to the same address (query kept by the browser)."""
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return _page(
        "Password required",
        "<p>This link is protected. Enter its password to continue.</p>"
        f"{message}"
        '<form method="post"><input type="password" name="password" autocomplete="current-password"'
        ' required autofocus aria-label="Password"> <button type="submit">Continue</button></form>',
    )


def blocked_page(url: str) -> bytes:
    """Warning instead of a redirect to a blocked host; the destination is shown, not linked."""
    return _page(
        "Warning: blocked destination",
        "<p>This short link points to a site that is blocked on this service because it may be"
        " harmful. It was not opened.</p>"
        f"<p>Destination: <code>{escape(url)}</code></p>",
    )


def preview_page(*, title: str, description: str, image: str, url: str, canonical: str) -> bytes:
    """Open Graph and Twitter card tags for link-preview fetchers; ``url`` "" (a locked link) shows no destination."""
    tags = [
        ("property", "og:title", title),
        ("property", "og:description", description),
        ("property", "og:image", image),
        ("property", "og:url", canonical),
        ("property", "og:type", "website"),
        ("name", "twitter:card", "summary_large_image" if image else "summary"),
        ("name", "twitter:title", title),
        ("name", "twitter:description", description),
        ("name", "twitter:image", image),
    ]
    meta = "".join(f'<meta {attr}="{name}" content="{escape(value)}">' for attr, name, value in tags if value)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>{meta}"
        f'<meta name="description" content="{escape(description)}"></head>'
        f"<body><h1>{escape(title)}</h1><p>{escape(description)}</p>"
        + (f'<p><a href="{escape(url)}">{escape(url)}</a></p>' if url else "")
        + "</body></html>"
    ).encode()
