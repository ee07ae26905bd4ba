"""Which stored clicks become ``link.clicked`` webhook events, and writing them with the clicks.

The workspaces with an enabled endpoint subscribed to ``link.clicked`` are re-read at most every
``refresh_s`` (one small query); with none, a batch costs a dictionary check and nothing else.
The events are written in the transaction that stores the clicks, from the rows actually
inserted, so a stored click has its event exactly once and a redelivered one has none.
``h0p webhooks`` reads the enriched click back when it fans the event out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from ingest.enrich.row import COLUMNS

_TS, _WS, _LINK, _BOT = (COLUMNS.index(c) for c in ("ts", "workspace_id", "link_id", "bot"))
EVENT_COLUMNS = ("workspace_id", "type", "link_id", "click_event_id", "click_ts")

SUBSCRIBED_SQL = """
SELECT workspace_id, bool_or(include_bots) AS bots FROM webhooks
WHERE NOT disabled AND 'link.clicked' = ANY(events) GROUP BY workspace_id
"""


class ClickSubscriptions:
    """Workspace id → whether some endpoint there wants bot clicks too."""

    def __init__(self, refresh_s: float = 1.0) -> None:
        self.refresh_s = refresh_s
        self._workspaces: dict[str, bool] = {}
        self._next_refresh = 0.0

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Re-read the subscribed workspaces if the last read is older than ``refresh_s``."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        rows = await conn.fetch(SUBSCRIBED_SQL)
        self._workspaces = {r["workspace_id"]: r["bots"] for r in rows}
        self._next_refresh = now + self.refresh_s

    def events(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The ``webhook_events`` rows of the stored ``rows`` that some endpoint wants."""
        subscribed = self._workspaces
        if not subscribed:
            return []
        out = []
        for r in rows:
            bots = subscribed.get(r[_WS])
            if bots is None or r[_LINK] is None or (r[_BOT] and not bots):
                continue
            out.append((r[_WS], "link.clicked", r[_LINK], r[0], r[_TS]))
        return out


async def write_click_events(
    conn: asyncpg.Connection, subscriptions: ClickSubscriptions | None, rows: Sequence[tuple[Any, ...]]
) -> None:
    """In the caller's transaction: the ``link.clicked`` events of the inserted ``rows``."""
    if subscriptions is None:
        return
    events = subscriptions.events(rows)
    if events:
        await conn.copy_records_to_table("webhook_events", records=events, columns=EVENT_COLUMNS)
