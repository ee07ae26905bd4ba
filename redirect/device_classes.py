"""Contract: the device classes a visitor is put in, and the other names people give them.

One vocabulary for the edge's rules (``device=tablet``), what ingest stores, the analytics filters and
the API's validation and docs. Kept apart from ``redirect.visitor_agent`` so the API can check a rule
without loading the classifier's regexes (two seconds and tens of MB at import). Leaf module: stdlib.
"""

from __future__ import annotations

DEVICE_CLASSES = ("desktop", "mobile", "tablet", "tv", "console", "bot", "other")
# what a rule may say instead: each stands for one class
DEVICE_ALIASES = {"phone": "mobile", "smartphone": "mobile", "phablet": "mobile", "television": "tv", "pc": "desktop"}


def normalise_device(name: str) -> str:
    """A device class as a rule or filter may spell it: "Phone", "smartphone" and "mobile" are one."""
    key = name.strip().lower()
    return DEVICE_ALIASES.get(key, key)


def device_words() -> str:
    """The classes and their aliases, for messages and docs: "`desktop`, `mobile` (or `phone`, …), …"."""
    words = []
    for cls in DEVICE_CLASSES:
        aliases = [f"`{a}`" for a, c in DEVICE_ALIASES.items() if c == cls]
        words.append(f"`{cls}`" + (f" (or {', '.join(aliases)})" if aliases else ""))
    return ", ".join(words)
