"""The hot path: turns (host, slug) into a reply (status, headers, body) and a click event.

No framework, no per-request logging. The edge's HTTP protocol (``redirect.protocol``) hands
every GET and HEAD to ``respond`` straight from the parser and writes the reply, with no ASGI
task: a link in the in-process cache is answered at once, one that is not when Redis answers
(one MGET for every request waiting). POSTs (the password form) go through the ASGI call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

from h0p_settings import Settings
from redirect import pages
from redirect.agent import is_preview_fetcher
from redirect.cache import MISSING
from redirect.client import ClientAddress
from redirect.geo import GeoLocator
from redirect.hosts import ascii_host, ascii_url
from redirect.metrics import EdgeMetrics
from redirect.producer import ClickProducer
from redirect.protect import Attempt, PasswordGate, read_cookie
from redirect.record import DomainRecord, LinkRecord, domain_key, link_key
from redirect.request import BadRequest, Headers, normalise_host, parse_slug, raw_path_of
from redirect.resolve import RedisAnswer, Resolver, Unavailable
from redirect.rules import Visitor, choose_rule, choose_split, merge_query, split_bucket, strip_marker

log = logging.getLogger("h0p.redirect")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

VISITOR_COOKIE = "h0p_vid"
MAX_FORM_BYTES = 4096
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
_SAFE_URL_CHARS = "!#$%&'()*+,/:;=?@[]~-._"
_NO_STORE = (b"cache-control", b"no-store")
_HTML = (b"content-type", b"text/html; charset=utf-8")
_CSP = (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_EMPTY = (b"content-length", b"0")
_ALLOW = ((b"allow", b"GET, HEAD"),)
_RETRY = ((b"retry-after", b"5"),)
_NO_FRAMES = ((b"x-frame-options", b"DENY"),)

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body (dropped for HEAD when sent)
ReplyTo = Callable[[Reply | Coroutine[Any, Any, Reply]], None]  # see EdgeHandler.respond

# Paths the edge answers itself (redirect.app), never short links; /metrics answers 404 here (it is
# served on its own port) rather than being looked up as a slug
RESERVED = frozenset(("/healthz", "/readyz", "/metrics", "/favicon.ico"))


def location_bytes(url: str) -> bytes:
    """A Location header value: ASCII only (hosts in ``redirect.hosts`` form, the rest percent-encoded)."""
    if url.isascii() and url.isprintable() and " " not in url:
        return url.encode("ascii")
    # the API's mapping (IDNA 2008 / UTS #46), not Python's "idna" codec (IDNA 2003): the host sent
    # must be the host the API checked. ``_target`` refuses a URL whose host has no such form.
    return quote(ascii_url(url) or url, safe=_SAFE_URL_CHARS).encode("ascii")


class EdgeHandler:
    """Answers every path that is not one of the edge's own endpoints.

    The ASGI call answers every request. ``respond`` answers a GET or HEAD the same way for the
    edge's HTTP protocol, without an ASGI task: at once from the in-process cache, or from a
    Redis answer shared with other requests; both end in ``_link``.
    """

    def __init__(
        self,
        settings: Settings,
        resolver: Resolver,
        producer: ClickProducer,
        gate: PasswordGate,
        geo: GeoLocator,
        metrics: EdgeMetrics,
        may_be_custom: Callable[[str], bool] = lambda _host: True,
    ) -> None:
        self.settings = settings
        self.default_domain = settings.default_domain
        self.resolver = resolver
        self.cache = resolver.cache
        self.producer = producer
        self.events = producer.enabled
        self.gate = gate
        self.geo = geo
        self.metrics = metrics
        self.outcome = metrics.requests
        self.clients = ClientAddress(settings.trusted_proxies)
        self.blocked = tuple(ascii_host(h) or h for h in settings.blocked_hosts)
        self._targets: dict[str, tuple[bytes, bool]] = {}  # url -> (Location bytes, blocked)
        self._targets_bound = max(50_000, settings.cache_size)  # as many as the links the LRU holds
        self._hosts: dict[str, str] = {}  # Host header value -> slug namespace host
        self._may_be_custom = may_be_custom  # False: not a verified domain (redirect.domains), no lookup
        self._redirected = metrics.requests["redirect"]
        self._cache_hit = metrics.cache_hit
        self._secure_cookie = "; Secure" if settings.public_scheme == "https" else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        client = scope.get("client")
        peer = client[0] if client else ""
        query_string = scope.get("query_string", b"")
        reply = await self._answer(method, raw_path_of(scope), query_string, scope["headers"], peer, receive)
        status, headers, body = reply
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def respond(
        self, method: str, raw_path: bytes, query_string: bytes, raw_headers: list[tuple[bytes, bytes]], peer: str,
        reply_to: ReplyTo,
    ) -> Reply | Coroutine[Any, Any, Reply] | None:  # fmt: skip
        """A GET or HEAD (without a body) answered with as little as it takes; the edge's protocol calls this.

        - a ``Reply``: the link (and its domain) were in the in-process cache;
        - ``None``: the link was not, and Redis is being asked in one MGET with other requests;
          ``reply_to`` gets the reply later (never before this returns), or a coroutine making it
          when Redis had no record (Postgres is next);
        - a coroutine making the reply: anything else (an uncached custom domain, Redis down, a
          malformed path), through the same lookups as the ASGI call.
        """
        try:
            slug = parse_slug(raw_path)
        except BadRequest:
            return self._answer(method, raw_path, query_string, raw_headers, peer)
        headers = Headers(raw_headers)
        host = self._hosts.get(headers.host) or self._host(headers.host)
        domain, domain_record = host, None
        if host != self.default_domain:
            found = self.cache.get(domain_key(host))
            if found is MISSING:
                return self._answer(method, raw_path, query_string, raw_headers, peer)
            self._cache_hit.inc()
            if isinstance(found, DomainRecord):
                domain_record = found
            else:
                domain = self.default_domain
        if not slug:
            return self._root(domain, domain_record)
        key = link_key(domain, slug)
        record = self.cache.get(key)
        if record is MISSING:
            if not self.resolver.redis_ok:
                return self._answer(method, raw_path, query_string, raw_headers, peer)
            self.resolver.batcher.get_soon(
                key, partial(self._redis_answered, reply_to, key, self.cache.generation, method, domain, slug,
                             domain_record, headers, peer, query_string, raw_path, raw_headers),
            )  # fmt: skip
            return None
        self._cache_hit.inc()
        if record is None:  # known not to exist
            return self._not_found(method, domain, slug, domain_record, headers, peer, query_string)
        return self._link(method, domain, slug, record, domain_record, headers, peer, query_string)  # type: ignore[arg-type]

    def _redis_answered(
        self, reply_to: ReplyTo, key: str, generation: int, method: str, domain: str, slug: str,
        domain_record: DomainRecord | None, headers: Headers, peer: str, query_string: bytes, raw_path: bytes,
        raw_headers: list[tuple[bytes, bytes]], answer: RedisAnswer,
    ) -> None:  # fmt: skip
        """``respond``'s lookup, continued with what Redis answered."""
        reply: Reply | Coroutine[Any, Any, Reply]
        try:
            if isinstance(answer, BaseException):
                self.resolver.redis_failed(answer)  # the ASGI path's lookup now goes to Postgres
                reply = self._answer(method, raw_path, query_string, raw_headers, peer)
            else:
                self.metrics.cache_miss.inc()
                record = self.resolver.from_redis(key, answer, generation)
                if isinstance(record, LinkRecord):
                    reply = self._link(method, domain, slug, record, domain_record, headers, peer, query_string)
                elif record is None:  # a negative marker: known not to exist
                    reply = self._not_found(method, domain, slug, domain_record, headers, peer, query_string)
                else:
                    reply = self._answer(method, raw_path, query_string, raw_headers, peer, redis_missed=True)
        except Exception:  # what uvicorn does for the ASGI call: log it, answer 500
            log.exception("answering %s failed", key)
            reply = page_reply(500, pages.UNAVAILABLE)
        reply_to(reply)

    async def _answer(
        self, method: str, raw_path: bytes, query_string: bytes, raw_headers: Iterable[tuple[bytes, bytes]],
        peer: str, receive: Receive | None = None, *, redis_missed: bool = False,
    ) -> Reply:  # fmt: skip
        """Any request, through every lookup layer; ``receive`` is read for a POST only.

        ``redis_missed``: the link's key was found in neither the LRU nor Redis (``respond`` asked).
        """
        if method not in ("GET", "HEAD", "POST"):
            self.outcome["bad_request"].inc()
            return page_reply(405, pages.NOT_ALLOWED, _ALLOW)
        try:
            slug = parse_slug(raw_path)
        except BadRequest as exc:
            self.outcome["bad_request"].inc()
            return page_reply(exc.status, pages.TOO_LONG if exc.status == 414 else pages.BAD_REQUEST)
        headers = Headers(raw_headers)
        host = self._hosts.get(headers.host) or self._host(headers.host)
        ip = self.clients.resolve(peer, headers.forwarded_for)
        try:
            domain, domain_record = await self._domain(host, ip)
            if not slug:
                return self._root(domain, domain_record)
            key = link_key(domain, slug)
            if redis_missed:
                record = await self.resolver.lookup(key, redis_missed=True, client_ip=ip)
            else:
                record = await self._lookup(key, ip)
        except Unavailable:
            self.outcome["unavailable"].inc()
            return page_reply(503, pages.UNAVAILABLE, _RETRY)
        if method == "POST":
            if not isinstance(record, LinkRecord) or not record.password_hash or receive is None:
                self.outcome["bad_request"].inc()
                return page_reply(405, pages.NOT_ALLOWED, _ALLOW)
            return await self._unlock(receive, record, ip, raw_path, query_string)
        if not isinstance(record, LinkRecord):
            return self._not_found(method, domain, slug, domain_record, headers, peer, query_string)
        return self._link(method, domain, slug, record, domain_record, headers, peer, query_string)

    def _link(
        self, method: str, domain: str, slug: str, record: LinkRecord, domain_record: DomainRecord | None,
        headers: Headers, peer: str, query_string: bytes,
    ) -> Reply:  # fmt: skip
        """A GET or HEAD of a link: expiry, preview, password, then rules, split and the redirect."""
        query, qr = strip_marker(query_string.decode("latin-1")) if query_string else ("", False)
        ip = self.clients.resolve(peer, headers.forwarded_for)
        now = time.time()
        if record.expires_at is not None and now >= record.expires_at:
            url = record.expired_url or (domain_record.expired_url if domain_record else None)
            self.outcome["expired"].inc()
            self._emit(now, domain, slug, record, url, None, ip, method, headers, query, qr, 302 if url else 410)
            return self._fallback(url, page_reply(410, pages.EXPIRED))
        if (record.og_title or record.og_description or record.og_image) and is_preview_fetcher(headers.user_agent):
            # The password and the blocked list come first: a card must not show what they hide.
            locked = bool(record.password_hash) and not self.gate.unlocked(record, headers.cookie)
            if not locked and self._target(record.url)[1]:
                self.outcome["blocked"].inc()
                self._emit(now, domain, slug, record, record.url, None, ip, method, headers, query, qr, 403)
                return page_reply(403, pages.blocked_page(record.url))
            self._emit(now, domain, slug, record, None, None, ip, method, headers, query, qr, 200)
            return self._preview(domain, slug, record, show_destination=not locked)
        if record.password_hash and not self.gate.unlocked(record, headers.cookie):
            self.outcome["password"].inc()
            return page_reply(200, pages.password_page(), _NO_FRAMES)
        url, rule = record.url, None
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if record.rules:
            visitor = Visitor(
                ip=ip, user_agent=headers.user_agent, accept_language=headers.accept_language,
                referer=headers.referer, query_string=query, locate=self.geo.locate, now=now,
            )  # fmt: skip
            chosen = choose_rule(record, visitor)
            if chosen is not None:
                url, rule = chosen
        if rule is None and record.split:
            visitor_id = read_cookie(headers.cookie, VISITOR_COOKIE) if headers.cookie else None
            if not visitor_id or len(visitor_id) != 32 or not visitor_id.isalnum():
                visitor_id = os.urandom(16).hex()
                cookie = f"{VISITOR_COOKIE}={visitor_id}; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax"
                extra = ((b"set-cookie", (cookie + self._secure_cookie).encode()),)
            chosen = choose_split(record.split, split_bucket(visitor_id, record.link_id))
            if chosen is not None:
                url, rule = chosen
        forwarded = parse_qsl(query, keep_blank_values=True) if query and record.forward_query else ()
        if record.utm or forwarded:
            url = merge_query(url, record.utm, forwarded)
        location, blocked = self._target(url)
        if blocked:
            self.outcome["blocked"].inc()
            self._emit(now, domain, slug, record, url, rule, ip, method, headers, query, qr, 403)
            return page_reply(403, pages.blocked_page(url))
        status = record.status_code if record.status_code in REDIRECT_CODES else 302
        self._redirected.inc()
        if self.events:
            self._emit(now, domain, slug, record, url, rule, ip, method, headers, query, qr, status)
        return _redirect(status, location, extra)

    # -- lookups ------------------------------------------------------------------------------

    async def _lookup(self, key: str, ip: str) -> Any:
        value = self.cache.get(key)
        if value is not MISSING:
            self._cache_hit.inc()
            return value
        return await self.resolver.lookup(key, client_ip=ip)

    async def _domain(self, host: str, ip: str) -> tuple[str, DomainRecord | None]:
        """The slug namespace for a host: its own when it is a verified custom domain."""
        if host == self.default_domain:
            return host, None
        found = await self._lookup(domain_key(host), ip)
        if isinstance(found, DomainRecord):
            return host, found
        return self.default_domain, None

    def _host(self, raw: str) -> str:
        """The host whose links a Host header value names, remembered (a few distinct values are the norm).

        The default domain for a host known not to be a verified domain: no lookup, so no Postgres.
        """
        if len(self._hosts) > 4096:
            self._hosts.clear()
        host = normalise_host(raw) or self.default_domain
        if host != self.default_domain and not self._may_be_custom(host):
            host = self.default_domain
        self._hosts[raw] = host
        return host

    def forget_hosts(self) -> None:
        """The verified domains changed: conclusions drawn from them go."""
        self._hosts.clear()

    def _target(self, url: str) -> tuple[bytes, bool]:
        """(Location bytes, refused): refused when the host sent is blocked or has no ASCII form."""
        if not self.blocked and url.isascii():  # sent as stored: the Location bytes alone (cheaper than the memo)
            return location_bytes(url), False
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > self._targets_bound:
                self._targets.clear()
            sent = ascii_url(url)
            # the check runs on exactly the host that goes out; a %-escape in it a browser would decode
            host = (urlsplit(sent).hostname or "").rstrip(".") if sent is not None else ""
            blocked = sent is None or "%" in host or any(host == b or host.endswith("." + b) for b in self.blocked)
            target = (location_bytes(sent or url), blocked)
            self._targets[url] = target
        return target

    def _fallback(self, url: str | None, otherwise: Reply) -> Reply:
        """A redirect to a link's or domain's fallback URL, refused as any destination would be."""
        if not url:
            return otherwise
        location, blocked = self._target(url)
        if blocked:
            self.outcome["blocked"].inc()
            return page_reply(403, pages.blocked_page(url))
        return _redirect(302, location)

    # -- other answers ------------------------------------------------------------------------

    def _root(self, domain: str, record: DomainRecord | None) -> Reply:
        self.outcome["root"].inc()
        return self._fallback(record.root_url if record else None, page_reply(200, pages.root_page(domain)))

    def _not_found(
        self, method: str, domain: str, slug: str, domain_record: DomainRecord | None, headers: Headers,
        peer: str, query_string: bytes,
    ) -> Reply:  # fmt: skip
        self.outcome["not_found"].inc()
        url = domain_record.not_found_url if domain_record else None
        # an orphan: hits on missing links show up in analytics
        query, qr = strip_marker(query_string.decode("latin-1"))
        ip = self.clients.resolve(peer, headers.forwarded_for)
        self._emit(time.time(), domain, slug, None, url, None, ip, method, headers, query, qr, 302 if url else 404)
        return self._fallback(url, page_reply(404, pages.NOT_FOUND))

    def _preview(self, domain: str, slug: str, record: LinkRecord, *, show_destination: bool) -> Reply:
        self.outcome["preview"].inc()
        image = record.og_image or ""
        if image and not image.startswith(("http://", "https://")):
            # a file id: its public content URL on the API
            base = self.settings.api_public_url or (
                f"{self.settings.public_scheme}://{self.default_domain}:{self.settings.api_port}"
            )
            image = f"{base}/files/{quote(image, safe='')}/content"
        body = pages.preview_page(
            title=record.og_title or "",
            description=record.og_description or "",
            image=image,
            url=record.url if show_destination else "",
            canonical=self.settings.short_url(domain, slug),
        )
        return page_reply(200, body)

    async def _unlock(
        self, receive: Receive, record: LinkRecord, ip: str, raw_path: bytes, query_string: bytes
    ) -> Reply:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                self.outcome["bad_request"].inc()
                return page_reply(413, pages.BAD_REQUEST)
            if not message.get("more_body", False):
                break
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            form = {}
        password = (form.get("password") or [""])[0]
        try:
            result, retry_after_s = await self.gate.attempt(record, ip, password)
        except Unavailable:
            self.outcome["unavailable"].inc()
            return page_reply(503, pages.UNAVAILABLE, _RETRY)
        if result is Attempt.LIMITED or result is Attempt.BUSY:
            self.outcome["limited" if result is Attempt.LIMITED else "busy"].inc()
            page = pages.TOO_MANY if result is Attempt.LIMITED else pages.BUSY
            return page_reply(429, page, ((b"retry-after", str(retry_after_s).encode()),))
        self.outcome["password"].inc()
        if result is Attempt.WRONG:
            return page_reply(403, pages.password_page("Wrong password."), _NO_FRAMES)
        # 303: the browser GETs the link again, now with the cookie, and follows it normally
        target = raw_path.split(b"?", 1)[0] + (b"?" + query_string if query_string else b"")
        return _redirect(303, target, ((b"set-cookie", self.gate.unlock_cookie(record)),))

    # -- events ---------------------------------------------------------------------------------

    def _emit(
        self, now: float, domain: str, slug: str, record: LinkRecord | None, url: str | None, rule: str | None,
        ip: str, method: str, headers: Headers, query: str, qr: bool, status: int,
    ) -> None:  # fmt: skip
        if not self.events:
            return
        # ClickEvent's fields after v and id, in order: the sender makes the id and the JSON
        self.producer.emit(
            (
                now, domain, slug, record.link_id if record else None, record.workspace_id if record else None,
                url, rule, ip, method, headers.user_agent, headers.referer, headers.accept_language, query, qr,
                status,
            )
        )  # fmt: skip


def _redirect(status: int, location: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return status, [(b"location", location), _NO_STORE, _EMPTY, *extra], b""


def page_reply(status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    headers = [_HTML, (b"content-length", str(len(body)).encode()), _NO_STORE, _CSP, _NOSNIFF, *extra]
    return status, headers, body
