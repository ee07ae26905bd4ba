"""``python -m api.mcp``: the stdio MCP server (the same as ``h0p mcp``)."""

from api.mcp.stdio import run_stdio
from h0p_settings import load_settings_or_exit

run_stdio(load_settings_or_exit())
