"""Which hits are not people: the user agents the contract's classifier calls bots, and HEAD requests."""

from __future__ import annotations

from redirect.visitor_agent import SCRIPTED_CLIENTS, is_bot_agent

__all__ = ["SCRIPTED_CLIENTS", "is_bot_agent", "is_bot_request"]


def is_bot_request(method: str) -> bool:
    """HEAD requests are link checkers and unfurlers probing, never a person following a link."""
    return method.upper() == "HEAD"
