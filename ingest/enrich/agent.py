"""User agent string to device class, brand/model, browser and OS: the contract's classifier, cached.

The classification is ``redirect.visitor_agent``, the one the edge's routing rules use, so the
analytics filter ``device=tablet`` and a rule ``device=tablet`` agree on every visitor.
"""

from __future__ import annotations

from redirect.visitor_agent import VisitorAgent, classify

Agent = VisitorAgent  # the row takes fields device … os_version in column order, then bot

# Common agents of each kind: the classifier builds some of its matchers on first use (uap-core's
# lazily loaded regexes, Matomo's per-brand model patterns; up to ~40 ms for the first Android
# phone), which would otherwise land on the first batch's latency.
WARM_UP_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)


class AgentParser:
    """Parses user agents once each: a bounded cache keyed by the full string (they repeat a lot)."""

    def __init__(self, cache_size: int = 50_000) -> None:
        self._cache: dict[str, Agent] = {}
        self._cache_size = cache_size

    def warm(self) -> None:
        """Classify WARM_UP_AGENTS once (not cached: the cache holds only agents seen in clicks)."""
        for ua in WARM_UP_AGENTS:
            classify(ua)

    def parse(self, ua: str) -> Agent:
        """The Agent for ``ua`` (cached)."""
        agent = self._cache.get(ua)
        if agent is None:
            agent = classify(ua)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[ua] = agent
        return agent
