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

# Per workspace: whether an endpoint wants bots, and the links that can matter: NULL when some
# endpoint takes every link or is scoped by folder or tag (links move between those), else the
# union of the endpoints' linkIds. A superset: the fan-out applies each endpoint's scope exactly.
SUBSCRIBED_SQL = """
SELECT workspace_id, bool_or(include_bots) AS bots,
       CASE WHEN bool_or(cardinality(link_ids) = 0 OR cardinality(folder_ids) > 0 OR cardinality(tag_ids) > 0)
            THEN NULL ELSE array_agg(DISTINCT l) END AS links
FROM webhooks CROSS JOIN LATERAL unnest(CASE WHEN cardinality(link_ids) = 0 THEN '{NULL}' ELSE link_ids END) AS l
WHERE NOT disabled AND 'link.clicked' = ANY(events) GROUP BY workspace_id
"""


class ClickSubscriptions:
    """Workspace id → whether some endpoint there wants bot clicks too, and the links it may want (None: any)."""

    def __init__(self, refresh_s: float = 1.0) -> None:
        self.refresh_s = refresh_s
        self._workspaces: dict[str, tuple[bool, frozenset[str] | None]] = {}
        self._next_refresh = 0.0

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Re-read the subscribed workspaces if the last read is older than ``refresh_s``."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        rows = await conn.fetch(SUBSCRIBED_SQL)
        self._workspaces = {
            r["workspace_id"]: (r["bots"], None if r["links"] is None else frozenset(r["links"])) for r in rows
        }
        self._next_refresh = now + self.refresh_s

    def events(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The ``webhook_events`` rows of the stored ``rows`` that some endpoint wants."""
        subscribed = self._workspaces
        if not subscribed:
            return []
        out = []
        for r in rows:
            wanted = subscribed.get(r[_WS])
            if wanted is None or r[_LINK] is None or (r[_BOT] and not wanted[0]):
                continue
            if wanted[1] is not None and r[_LINK] not in wanted[1]:
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
