"""Services: one module per resource; no HTTP in them. The routes, CLI, MCP and tests call these."""
