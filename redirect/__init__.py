"""The redirect edge: resolves (host, slug) to a response and emits click events."""
