"""Listing links: filters, sort and pages over a workspace's links (``GET /links``)."""

from __future__ import annotations

from typing import Any

from api.schemas import LinkList, LinkListQuery
from api.services.context import ServiceContext
from api.services.links import LINK_COLUMNS, WITH_COUNTERS, link_from_row

# clicks and lastClickedAt: a range of link_counters' sort indexes (migration 0023), hence c.workspace_id below
_SORT_COLUMNS = {"createdAt": "l.created_at", "clicks": "c.clicks", "lastClickedAt": "c.last_clicked_at"}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_links(ctx: ServiceContext, workspace_id: str, query: LinkListQuery) -> LinkList:
    """One page of the workspace's links matching ``query``, with the total count of matches."""
    where = ["l.workspace_id = $1"]
    args: list[Any] = [workspace_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.search:
        p = arg(_like(query.search))
        # the expression of the trigram index links_search (migration 0002)
        where.append(f"(l.slug COLLATE \"default\" || ' ' || l.url || ' ' || coalesce(l.title, '')) ILIKE {p}")
    if query.domain:
        where.append(f"l.domain = {arg(query.domain.strip().lower().rstrip('.'))}")
    if query.folder_id:
        where.append(f"l.folder_id = {arg(query.folder_id)}")
    if query.archived is not None:
        where.append(f"l.archived = {arg(query.archived)}")
    if query.tag_ids:
        tags = [t.strip() for t in query.tag_ids.split(",") if t.strip()]
        where.append(f"EXISTS (SELECT 1 FROM link_tags t WHERE t.link_id = l.id AND t.tag_id = ANY({arg(tags)}))")
    condition = " AND ".join(where)
    direction = "ASC" if query.order == "asc" else "DESC"
    # only last_clicked_at can be NULL; "never clicked" sorts last newest-first (its index order)
    nulls = (" NULLS LAST" if direction == "DESC" else " NULLS FIRST") if query.sort == "lastClickedAt" else ""
    order = f"{_SORT_COLUMNS[query.sort]} {direction}{nulls}, l.id {direction}"
    count_args = list(args)
    # The page is cut first, then its tags are read: the tag sub-select runs for the rows returned,
    # not for every row an OFFSET skips.
    window = f"LIMIT {arg(query.limit)} OFFSET {arg(query.page * query.limit)}"
    page_sql = (
        f"{LINK_COLUMNS} FROM (SELECT l.* FROM links l{WITH_COUNTERS} WHERE {condition} AND c.workspace_id = $1"
        f" ORDER BY {order} {window}) l{WITH_COUNTERS} ORDER BY {order}"
    )
    async with ctx.pool.acquire() as conn:
        if len(where) == 1:  # no filter: the count kept by the links_count triggers (migration 0002)
            total = await conn.fetchval("SELECT link_count FROM workspaces WHERE id = $1", workspace_id) or 0
        else:
            total = await conn.fetchval(f"SELECT count(*) FROM links l WHERE {condition}", *count_args)
        rows = await conn.fetch(page_sql, *args) if total > query.page * query.limit else []
    return LinkList(data=[link_from_row(ctx, r) for r in rows], page=query.page, limit=query.limit, total=total)
