"""Link click counters (api/migrations/0023_link_counters.sql): kept by ingest in link_counters, read
by the API for link objects and the clicks / last-click sorts, carried over from links on upgrade."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from api import db
from api.ids import new_id
from api.services.context import ServiceContext
from h0p_settings import Settings
from tests.conftest import PG_BASE
from tests.ingest.conftest import click, store_clicks

COUNTERS_MIGRATION = 23


async def test_links_show_and_sort_by_the_counters_of_concurrent_ingest_batches(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    ws = (await api.get("/workspace")).json()["id"]
    links = [(await api.post("/links", json={"url": f"https://example.com/{i}"})).json() for i in range(4)]
    rows = [{**lk, "workspace_id": ws} for lk in links]  # what click() reads: id, domain, slug, url, workspace_id
    now = time.time()
    # clicks per link 7, 0, 12, 3 (the second one only a bot's); the last click of each a few seconds apart
    plan = {0: 7, 2: 12, 3: 3}
    events = [click(rows[i], ts=now - 60 + k + i * 0.25) for i, n in plan.items() for k in range(n)]
    events.append(click(rows[1], ts=now, ua="Googlebot/2.1 (+http://www.google.com/bot.html)"))
    # two writers at once, each in several batches (as two ingest processes would)
    halves = [events[0::2], events[1::2]]
    await asyncio.gather(*(store_clicks(settings, half, batch=5) for half in halves))

    async def listed(**params: Any) -> list[tuple[str, int]]:
        data = (await api.get("/links", params=params)).json()["data"]
        return [(d["id"], d["clicks"]) for d in data]

    by_clicks = [(rows[i]["id"], n) for i, n in ((2, 12), (0, 7), (3, 3), (1, 0))]
    assert await listed(sort="clicks") == by_clicks
    assert await listed(sort="clicks", order="asc") == by_clicks[::-1]
    last = {i: datetime.fromtimestamp(now - 60 + (n - 1) + i * 0.25, UTC) for i, n in plan.items()}
    newest_first = [rows[i]["id"] for i in sorted(last, key=last.__getitem__, reverse=True)] + [rows[1]["id"]]
    assert [i for i, _ in await listed(sort="lastClickedAt")] == newest_first  # never clicked: last
    one = (await api.get(f"/links/{rows[2]['id']}")).json()
    assert one["clicks"] == 12
    assert abs(datetime.fromisoformat(one["lastClickedAt"]).timestamp() - last[2].timestamp()) < 0.001
    assert (await api.get(f"/links/{rows[1]['id']}")).json()["lastClickedAt"] is None  # a bot's click is not counted


async def test_every_link_has_one_counters_row_from_insert_or_copy_until_deleted(ctx: ServiceContext) -> None:
    ws = new_id("ws")
    async with ctx.pool.acquire() as conn:
        await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, $1)", ws)
        await conn.execute(
            "INSERT INTO links (id, workspace_id, domain, slug, url) VALUES ($1, $2, 'localhost', $3, 'https://e.x/')",
            new_id("link"), ws, f"one-{ws[-8:]}",
        )  # fmt: skip
        await conn.copy_records_to_table(
            "links", columns=["id", "workspace_id", "domain", "slug", "url"],
            records=[(new_id("link"), ws, "localhost", f"copy{i}-{ws[-8:]}", "https://e.x/") for i in range(3)],
        )  # fmt: skip
        counters = "SELECT link_id, workspace_id, clicks, last_clicked_at FROM link_counters WHERE workspace_id = $1"
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM links WHERE workspace_id = $1", ws)}
        assert {tuple(r) for r in await conn.fetch(counters, ws)} == {(i, ws, 0, None) for i in ids}
        await conn.execute("DELETE FROM links WHERE workspace_id = $1 AND slug LIKE 'copy%'", ws)
        assert [r["link_id"] for r in await conn.fetch(counters, ws)] == [
            await conn.fetchval("SELECT id FROM links WHERE workspace_id = $1", ws)
        ]
        await conn.execute("DELETE FROM workspaces WHERE id = $1", ws)  # its links go, and their counters
        assert await conn.fetch(counters, ws) == []


async def test_upgrade_carries_each_links_counters_over() -> None:
    url = f"{PG_BASE}/h0p_test_counters_upgrade_{new_id('db').lower()[-10:]}"
    await db.ensure_database(url)
    try:
        conn = await asyncpg.connect(url)
        try:
            # the schema as it was before the counters moved, with counted links in it
            await conn.execute("CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
            for version, name, sql in db.migration_files():
                if version < COUNTERS_MIGRATION:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            await conn.execute("INSERT INTO workspaces (id, name) VALUES ('ws_a', 'a'), ('ws_b', 'b')")
            at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
            before = [("link_a1", "ws_a", 41, at), ("link_a2", "ws_a", 0, None), ("link_b1", "ws_b", 7, at)]
            await conn.executemany(
                "INSERT INTO links (id, workspace_id, domain, slug, url, clicks, last_clicked_at)"
                " VALUES ($1, $2, 'localhost', $1, 'https://e.x/', $3, $4)",
                before,
            )
        finally:
            await conn.close()

        assert "0023_link_counters.sql" in await db.migrate(url)

        conn = await asyncpg.connect(url)
        try:
            after = await conn.fetch("SELECT link_id, workspace_id, clicks, last_clicked_at FROM link_counters")
            assert sorted(tuple(r) for r in after) == before
            # an ingest process of the previous release, still running: its increments land here
            later = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
            await conn.execute(
                "UPDATE links AS l SET clicks = l.clicks + c.n, last_clicked_at = GREATEST(l.last_clicked_at, c.last)"
                " FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS c(link_id, n, last)"
                " WHERE l.id = c.link_id",
                ["link_a2", "link_b1"], [2, 3], [later, later],
            )  # fmt: skip
            after = await conn.fetch("SELECT link_id, workspace_id, clicks, last_clicked_at FROM link_counters")
            assert sorted(tuple(r) for r in after) == [
                ("link_a1", "ws_a", 41, at), ("link_a2", "ws_a", 2, later), ("link_b1", "ws_b", 10, later)
            ]  # fmt: skip
        finally:
            await conn.close()
    finally:
        await db.drop_database(url)
