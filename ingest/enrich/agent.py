"""User agent string to device class, brand/model, browser and OS: the contract's classifier, cached.

The classification is ``redirect.visitor_agent``, the one the edge's routing rules use, so the
analytics filter ``device=tablet`` and a rule ``device=tablet`` agree on every visitor.
"""

from __future__ import annotations

from redirect.visitor_agent import VisitorAgent, classify

Agent = VisitorAgent  # the row takes fields device … os_version in column order, then bot


class AgentParser:
    """Parses user agents once each: a bounded cache keyed by the full string (they repeat a lot)."""

    def __init__(self, cache_size: int = 50_000) -> None:
        self._cache: dict[str, Agent] = {}
        self._cache_size = cache_size

    def parse(self, ua: str) -> Agent:
        """The Agent for ``ua`` (cached)."""
        agent = self._cache.get(ua)
        if agent is None:
            agent = classify(ua)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[ua] = agent
        return agent
