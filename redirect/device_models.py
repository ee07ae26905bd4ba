"""Device type by brand and model: Matomo device-detector's device regexes, read from its PyPI wheel.

Which Android phone, tablet or TV box a model code is (``SM-T510``, ``MiBOX3``, ``TB-8505FS``)
is data, not a rule: Matomo's ``mobiles.yml`` (LGPL-3.0, ~2,000 brands and ~15,000 model
patterns, each with its device type) is the most thorough public set. Matomo picks the first
brand whose pattern matches, then the first of that brand's models; this does the same.

Running 17,000 patterns per user agent costs milliseconds (the ``device_detector`` port itself
takes 5-15 ms), and compiling them all in a Rust regex set costs 400-800 MB. So each pattern is
compiled lazily with ``re`` and only tried when a literal it requires is in the user agent: an
Aho-Corasick automaton over those literals (``ahocorasick_rs``) names the few candidates.

Leaf module of the user-agent contract: stdlib, ``ahocorasick_rs``, ``regex`` and ``yaml_rs`` (all
dependencies of ``device-detector``), and the data files of ``device-detector``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal, cast

import ahocorasick_rs
import regex  # type: ignore[import-untyped]  # no stubs; used for compile and search only
import ua_parser_rs
import yaml_rs

# Matomo anchors every device pattern on a token start, "(?:^|[^A-Z0-9_\-])" case-insensitive; as a
# look-behind ``re`` can still skip ahead to the pattern's first literal
_PREFIX = r"(?<![A-Za-z0-9_\-])(?:"
_RUST_PREFIX = r"(?:^|[^A-Za-z0-9_\-])(?:"
_MIN_LITERAL = 3
_FEW = 24  # keyless patterns tried one by one in ``re``; more go to one Rust regex set
# Text nearly every user agent carries: a pattern keyed on it would be tried for every visitor
_COMMON_TEXT = (
    "mozilla/5.0 (linux; u; android 10.0.0; en-us; wv) applewebkit/537.36 (khtml, like gecko) version/4.0 "
    "chrome/100.0.0.0 mobile safari/537.36 build/ (windows nt 10.0; win64; x64) (iphone; cpu iphone os 17_0 "
    "like mac os x) (ipad; cpu os) (macintosh; intel mac os x 10_15_7) firefox/ gecko/20100101 opr/ edg/ "
    "samsungbrowser/ ucbrowser/ yabrowser/ 2019 2020 2021 2022 2023 2024 2025"
)
_COMMON_SHAPE = re.compile(r"[ ;]*android[ ;]*[\d.]*[ ;]*|[\d. ;/_-]{1,3}")


def _selective(literal: str) -> bool:
    return len(literal) >= _MIN_LITERAL and literal not in _COMMON_TEXT and _COMMON_SHAPE.fullmatch(literal) is None


_ESCAPED_LITERALS = frozenset("./-_()[]{}+*?|^$ ;:,'\"!#%&=<>@`~")


def _alternatives(pattern: str) -> list[str]:
    """The top-level ``|`` alternatives of a pattern (groups and classes kept whole)."""
    out, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return out


def _expand(alternative: str, budget: int = 256) -> list[str]:
    """``(?:A|B)rest`` as ``Arest`` and ``Brest``: small patterns with their own literals, same matches."""
    if not alternative.startswith("(") or alternative.startswith("(?") and not alternative.startswith("(?:"):
        return [alternative]
    end = _skip_group(alternative, 0)
    if alternative[end : end + 1] in ("?", "*", "+", "{"):
        return [alternative]
    inner = alternative[3 if alternative.startswith("(?:") else 1 : end - 1]
    rest = alternative[end:]
    out: list[str] = []
    for part in _alternatives(inner):
        out += _expand(part + rest, budget)
        if len(out) > budget:
            return [alternative]
    return out


def _skip_group(text: str, i: int) -> int:
    """Index after the group or class opening at ``text[i]``."""
    closing = "]" if text[i] == "[" else ")"
    depth, in_class = 0, False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if closing == "]":
            if c == "]" and in_class:
                return i + 1
            in_class = True
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _requirement(sequence: str) -> list[str] | None:
    """Literals of which every match of ``sequence`` contains one (lower-case), or None if unknown.

    A run of plain characters is one literal; a mandatory group is the union of its alternatives'
    requirements. The candidate whose shortest literal is longest wins (fewest false candidates).
    """
    candidates: list[list[str]] = []
    run, i = "", 0

    def close_run() -> None:
        nonlocal run
        if _selective(run.lower()):
            candidates.append([run.lower()])
        run = ""

    while i < len(sequence):
        c = sequence[i]
        if c == "\\":
            nxt = sequence[i + 1 : i + 2]
            if nxt and nxt in _ESCAPED_LITERALS:
                run += nxt
            else:
                close_run()
            i += 2
            continue
        if c in "([":
            end = _skip_group(sequence, i)
            optional = sequence[end : end + 1] in ("?", "*") or sequence[end : end + 3] in ("{0}", "{0,")
            close_run()
            if c == "(" and not optional:
                inner = sequence[i + 1 : end - 1]
                if inner.startswith("?"):
                    if inner[:3] in ("?<=", "?<!") or inner[:2] in ("?=", "?!"):
                        inner = ""  # look-around consumes nothing
                    elif inner.startswith("?:"):
                        inner = inner[2:]
                    elif inner.startswith("?P<") or inner.startswith("?<"):
                        inner = inner[inner.index(">") + 1 :]
                if inner:
                    parts = [_requirement(alt) for alt in _alternatives(inner)]
                    if all(part is not None for part in parts):
                        candidates.append(sorted({lit for part in parts if part is not None for lit in part}))
            i = end
            continue
        if c == "{":  # a counted repeat of the character before: the run ends there
            if sequence[i + 1 : i + 3] in ("0}", "0,"):
                run = run[:-1]  # ... and that character is optional
            close_run()
            closing = sequence.find("}", i)
            i = closing + 1 if closing > 0 else i + 1
            continue
        if c in "?*":
            run = run[:-1]  # the character before is optional
            close_run()
        elif c in "+.^$|":
            close_run()
        else:
            run += c
        i += 1
    close_run()
    if not candidates:
        return None
    return max(candidates, key=lambda lits: (min(len(lit) for lit in lits), -len(lits)))


def pattern_requirement(pattern: str) -> list[str] | None:
    """Literals of which every match of the whole pattern contains one, or None (always try it)."""
    parts = [_requirement(alt) for alt in _alternatives(pattern)]
    if any(part is None for part in parts):
        return None
    return sorted({lit for part in parts if part is not None for lit in part})


class _Pattern:
    """A Matomo pattern compiled on first use (most are never tried)."""

    __slots__ = ("_compiled", "_tried", "source", "value")

    def __init__(self, source: str, value: str) -> None:
        self.source = source
        self.value = value
        self._compiled: re.Pattern[str] | regex.Pattern[str] | None = None
        self._tried = False

    def search(self, ua: str) -> bool:
        if not self._tried:
            self._tried = True
            try:
                self._compiled = re.compile(_PREFIX + self.source + ")", re.IGNORECASE)
            except re.error:
                # PCRE syntax ``re`` lacks (variable-width look-behind): the ``regex`` module has it
                self._compiled = regex.compile(_PREFIX + self.source + ")", regex.IGNORECASE)
        return self._compiled is not None and self._compiled.search(ua) is not None


class _Prefiltered:
    """Patterns in order; ``first`` is the first that matches.

    A pattern with a literal is tried only when the literal is in the user agent (Aho-Corasick over
    all literals); the few hundred without one run together in one Rust regex set (ua-parser-rs),
    or alone in ``re`` for the look-arounds Rust lacks.
    """

    def __init__(self, patterns: list[_Pattern]) -> None:
        self._patterns = patterns
        literals: dict[str, list[int]] = {}
        self._always: list[int] = []
        rust: list[tuple[str, Literal["i"] | None, str | None, str | None, str | None]] = []
        keyless: list[int] = []
        for index, pattern in enumerate(patterns):
            required = pattern_requirement(pattern.source)
            if required is None:
                keyless.append(index)
                continue
            for lit in required:
                literals.setdefault(lit, []).append(index)
        if len(keyless) <= _FEW:
            self._always = keyless  # a few ``re`` searches cost less than a Rust set's first use
        else:
            for index in keyless:
                entry: tuple[str, Literal["i"] | None, str | None, str | None, str | None] = (
                    _RUST_PREFIX + patterns[index].source + ")",
                    "i",
                    str(index),
                    None,
                    None,
                )
                try:
                    ua_parser_rs.DeviceExtractor([entry])
                except ValueError:
                    self._always.append(index)  # look-around: Python only
                else:
                    rust.append(entry)
        self._rust = ua_parser_rs.DeviceExtractor(rust) if rust else None
        self._literals = list(literals)
        self._owners = [literals[lit] for lit in self._literals]
        self._automaton = ahocorasick_rs.AhoCorasick(self._literals) if self._literals else None

    def first(self, ua: str) -> _Pattern | None:
        candidates = set(self._always)
        if self._automaton is not None:
            for lit, _, _ in self._automaton.find_matches_as_indexes(ua.lower(), overlapping=True):
                candidates.update(self._owners[lit])
        rust_hit = self._rust.extract(ua) if self._rust is not None else None
        bound = int(rust_hit.family) if rust_hit is not None else len(self._patterns)
        for index in sorted(candidates):
            if index >= bound:
                break
            pattern = self._patterns[index]
            if pattern.search(ua):
                return pattern
        return self._patterns[bound] if rust_hit is not None else None


class _Brand:
    """A brand's type, and its models' look-up built on first use (most brands are never seen)."""

    __slots__ = ("_lookup", "default", "models")

    def __init__(self, default: str, models: list[_Pattern]) -> None:
        self.default = default
        self.models = models
        self._lookup: _Prefiltered | None = None

    def device_type(self, ua: str) -> str:
        if not self.models:
            return self.default
        if self._lookup is None:
            self._lookup = _Prefiltered(self.models)
        model = self._lookup.first(ua)
        return model.value if model is not None else self.default


class DeviceModels:
    """Matomo's device type for a user agent: "smartphone", "tablet", "tv", "console", … or ""."""

    def __init__(self, folder: Path) -> None:
        patterns: list[_Pattern] = []
        self._brands: list[_Brand] = []
        for name in ("consoles.yml", "mobiles.yml"):  # Matomo's order among the parsers used here
            data = cast(dict[str, dict[str, Any]], yaml_rs.loads((folder / name).read_text("utf-8")))
            default_type = "console" if name == "consoles.yml" else ""
            for brand in data.values():
                default = str(brand.get("device") or default_type)
                # each top-level alternative on its own: one small pattern tried when its literal is
                # present, instead of a 5,000-character alternation tried at every position
                models = [
                    _Pattern(alt, str(m.get("device") or default))
                    for m in brand.get("models") or ()
                    if m.get("regex")
                    for top in _alternatives(str(m["regex"]))
                    for alt in _expand(top)
                ]
                # a brand whose models are all of its type needs no model look-up
                if all(m.value == default for m in models):
                    models = []
                patterns += [
                    _Pattern(alt, str(len(self._brands)))
                    for top in _alternatives(str(brand["regex"]))
                    for alt in _expand(top)
                ]
                self._brands.append(_Brand(default, models))
        self._brand_patterns = _Prefiltered(patterns)

    def device_type(self, ua: str) -> str:
        """Matomo's type of the first brand (and model) matching ``ua``; "" when no brand does."""
        hit = self._brand_patterns.first(ua)
        if hit is None:
            return ""
        return self._brands[int(hit.value)].device_type(ua)


@lru_cache(maxsize=1)
def device_models() -> DeviceModels:
    """The data of the installed ``device-detector`` wheel, loaded once."""
    spec = find_spec("device_detector")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("device-detector is not installed: pip install -e . (it is a dependency of h0p)")
    root = Path(next(iter(spec.submodule_search_locations)))
    return DeviceModels(root / "regexes" / "upstream" / "device")
