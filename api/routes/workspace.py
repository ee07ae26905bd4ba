"""The calling key's workspace: plan, limits, features and usage."""

from __future__ import annotations

from api.endpoints import Call, Endpoint
from api.services import workspaces
from api.services.workspaces import WorkspaceInfo


async def get(call: Call) -> WorkspaceInfo:
    return await workspaces.workspace_info(call.ctx, call.principal.workspace_id)


ENDPOINTS = [
    Endpoint(
        "GET", "/workspace", get, "Get the workspace's plan and usage", "Workspace", scope="workspace:read",
        response=WorkspaceInfo, operation_id="getWorkspace",
        description="Limits of `null` are unlimited. `linksThisMonth` counts against `plan.linksPerMonth`.",
    ),
]  # fmt: skip
