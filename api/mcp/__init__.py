"""MCP for AI agents: the API's link, tag, folder, domain, QR and analytics services as tools.

``api.mcp.endpoint.create_mcp_endpoint`` serves it over Streamable HTTP at ``/mcp`` inside the
API process; ``api.mcp.stdio.run_stdio`` serves it over stdio (``h0p mcp``). Nothing is
imported here so that ``h0p mcp`` does not load Starlette routes it never serves.
"""
