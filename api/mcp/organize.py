"""Tools that organise links: tags, folders, and the workspace's domains (to pick ``domain`` from)."""

from __future__ import annotations

from api.mcp.spec import ToolSpec
from api.schemas import DomainList, Folder, FolderList, FolderWrite, PageQuery, Tag, TagCreate, TagList
from api.services import domains, folders, tags
from api.services.context import ServiceContext
from api.services.keys import Principal

_PAGE = "`page` from 0, `limit` up to 50 (default 10); returns {data, page, limit, total}."


async def _list_domains(ctx: ServiceContext, who: Principal, args: PageQuery) -> DomainList:
    return await domains.list_domains(ctx, who.workspace_id, args)


async def _list_tags(ctx: ServiceContext, who: Principal, args: PageQuery) -> TagList:
    return await tags.list_tags(ctx, who.workspace_id, args)


async def _create_tag(ctx: ServiceContext, who: Principal, args: TagCreate) -> Tag:
    return await tags.create_tag(ctx, who.workspace_id, args)


async def _list_folders(ctx: ServiceContext, who: Principal, args: PageQuery) -> FolderList:
    return await folders.list_folders(ctx, who.workspace_id, args)


async def _create_folder(ctx: ServiceContext, who: Principal, args: FolderWrite) -> Folder:
    return await folders.create_folder(ctx, who.workspace_id, args)


ORGANIZE_TOOLS: list[ToolSpec] = [
    ToolSpec(
        name="list_domains",
        title="List custom domains",
        description=(
            "List the workspace's custom domains, oldest first. Links can use a domain (the `domain` "
            "argument of create_link) once `verified` is true; without a domain, links use the default "
            f"domain. {_PAGE}"
        ),
        example='{"page": 0, "limit": 50}',
        route="GET /domains",
        scope="domains:read",
        args=PageQuery,
        run=_list_domains,
        output=DomainList,
        read_only=True,
    ),
    ToolSpec(
        name="list_tags",
        title="List tags",
        description=f"List the workspace's tags by name, with how many links carry each. {_PAGE}",
        example='{"limit": 50}',
        route="GET /tags",
        scope="tags:read",
        args=PageQuery,
        run=_list_tags,
        output=TagList,
        read_only=True,
    ),
    ToolSpec(
        name="create_tag",
        title="Create a tag",
        description=(
            "Create a tag (name unique in the workspace; ALREADY_EXIST otherwise) with an optional "
            "`color`. Use its `id` in `tagIds` of create_link or update_link."
        ),
        example='{"name": "spring-2026", "color": "green"}',
        route="POST /tags",
        scope="tags:write",
        args=TagCreate,
        run=_create_tag,
        output=Tag,
    ),
    ToolSpec(
        name="list_folders",
        title="List folders",
        description=f"List the workspace's folders by name, with how many links each holds. {_PAGE}",
        example='{"limit": 50}',
        route="GET /folders",
        scope="folders:read",
        args=PageQuery,
        run=_list_folders,
        output=FolderList,
        read_only=True,
    ),
    ToolSpec(
        name="create_folder",
        title="Create a folder",
        description=(
            "Create a folder (name unique in the workspace; ALREADY_EXIST otherwise). Put a link in it "
            "with `folderId` in create_link or update_link, and filter list_links by `folderId`."
        ),
        example='{"name": "Spring campaign"}',
        route="POST /folders",
        scope="folders:write",
        args=FolderWrite,
        run=_create_folder,
        output=Folder,
    ),
]
