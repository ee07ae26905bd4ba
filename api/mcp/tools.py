"""Every MCP tool, in the order ``tools/list`` shows them."""

from __future__ import annotations

from api.mcp.analytics import ANALYTICS_TOOLS
from api.mcp.links import LINK_TOOLS
from api.mcp.organize import ORGANIZE_TOOLS
from api.mcp.qr_codes import QR_TOOLS
from api.mcp.spec import ToolSpec
from api.mcp.webhooks import WEBHOOK_TOOLS

TOOLS: list[ToolSpec] = [*LINK_TOOLS, *ORGANIZE_TOOLS, *QR_TOOLS, *ANALYTICS_TOOLS, *WEBHOOK_TOOLS]
