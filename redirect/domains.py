"""The verified custom domains, held in memory: a Host outside them is answered without a lookup.

Without this set every Host that is not the default domain (an IP literal, a stray alias, a
random name) was looked up as a domain record, in Redis and then Postgres, so with Postgres
down such requests answered 503 even for cached links. The set is read whole from Postgres at
start and after every reconnect of the invalidation channel (messages may have been lost), and
kept current in between by the channel: a domain key heard there joins the set, to be looked up
as before. A member that is no longer verified costs a lookup, never a wrong answer; the next
full read drops it. Until a full read succeeds, every host is looked up (the old behaviour).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redirect.resolve import POSTGRES_ERRORS

log = logging.getLogger("h0p.redirect")

REFRESH_S = 300.0  # a full read now and then drops domains removed while nobody was listening
RETRY_S = 1.0
MAX_RETRY_S = 10.0


class VerifiedDomains:
    """Which hosts may be verified custom domains; ``run`` keeps the set current."""

    def __init__(self, read_all: Callable[[], Awaitable[list[str]]], on_change: Callable[[], None]) -> None:
        self.read_all = read_all
        self.on_change = on_change  # the edge forgets what it concluded from the old set
        self.hosts: frozenset[str] = frozenset()
        self.fresh = False  # a full read succeeded since the channel last (re)connected
        self._heard: set[str] = set()  # heard while a full read was in flight
        self._reload = asyncio.Event()
        self._reload.set()

    def may_be_custom(self, host: str) -> bool:
        """False only for a host known not to be a verified domain: it uses the default domain's links."""
        return not self.fresh or host in self.hosts

    def heard(self, host: str) -> None:
        """A domain's record changed (invalidation channel): look it up from now on."""
        self._heard.add(host)
        if host not in self.hosts:
            self.hosts = self.hosts | {host}
            self.on_change()

    def stale(self) -> None:
        """Messages may have been lost: look every host up until the next full read."""
        if self.fresh:
            self.fresh = False
            self.on_change()
        self._reload.set()

    async def run(self) -> None:
        """The loop owned by the app's lifespan: a full read when asked, or every ``REFRESH_S``."""
        retry = RETRY_S
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), REFRESH_S)
            except TimeoutError:
                pass
            self._reload.clear()
            self._heard.clear()
            try:
                hosts = await self.read_all()
            except Exception as exc:  # keep what we have, try again; the loop must outlive any surprise
                if isinstance(exc, POSTGRES_ERRORS):
                    log.warning("verified domains not read (%s); retrying in %.0fs", type(exc).__name__, retry)
                else:
                    log.exception("verified domains not read; retrying in %.0fs", retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_RETRY_S)
                self._reload.set()
                continue
            retry = RETRY_S
            if self._reload.is_set():
                continue  # the channel reconnected meanwhile: this read may have missed a change
            self.hosts = frozenset(hosts) | self._heard
            self.fresh = True
            self.on_change()
