"""The management API: system of record, every write, auth, analytics queries, MCP."""
