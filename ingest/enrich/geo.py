"""IP address to place, from a MaxMind-format City database (DB-IP City Lite by default)."""

from __future__ import annotations

import socket
from typing import Any, NamedTuple

import maxminddb


class Place(NamedTuple):
    country: str  # ISO 3166-1 alpha-2, '' when unknown
    region: str
    city: str
    continent: str  # two-letter continent code
    latitude: float | None
    longitude: float | None


UNKNOWN_PLACE = Place("", "", "", "", None, None)


def _name(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    names = node.get("names")
    return str(names.get("en", "")) if isinstance(names, dict) else ""


def place_from_record(record: Any) -> Place:
    """Read the fields we keep from one database record (GeoLite2/GeoIP2/DB-IP layout)."""
    if not isinstance(record, dict):
        return UNKNOWN_PLACE
    country = record.get("country") or record.get("registered_country") or {}
    subdivisions = record.get("subdivisions") or [{}]
    location = record.get("location") or {}
    return Place(
        country=str(country.get("iso_code", "")),
        region=_name(subdivisions[0]),
        city=_name(record.get("city")),
        continent=str((record.get("continent") or {}).get("code", "")),
        latitude=location.get("latitude"),
        longitude=location.get("longitude"),
    )


class GeoLocator:
    """Memory-mapped database reader with bounded caches: per address, and per IPv4 network.

    A database lookup (~15-20 µs: the C reader decodes the whole record, names in ten
    languages) dwarfs the rest of enrichment. The database answers with the network the record
    covers (e.g. a /16); every address inside it has the same record, so later addresses of
    that network are answered from the cache without a lookup. Exact, not an approximation.
    """

    def __init__(self, path: str, cache_size: int = 200_000) -> None:
        self._reader: Any = None
        if path:
            try:
                # the C extension also memory-maps the file; the pure-Python MMAP reader is ~7x slower
                self._reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
            except (ValueError, ImportError):
                self._reader = maxminddb.open_database(path, maxminddb.MODE_MMAP)
        self._cache: dict[str, Place] = {}
        self._cache_size = cache_size
        # (prefix length, address >> (32 - prefix length)) → place, for IPv4 networks seen so far
        self._networks: dict[tuple[int, int], Place] = {}
        self._prefixes: list[int] = []  # prefix lengths present in _networks, shortest first

    @property
    def enabled(self) -> bool:
        return self._reader is not None

    def locate(self, ip: str) -> Place:
        """The place of ``ip``; UNKNOWN_PLACE for private, malformed or unlisted addresses."""
        place = self._cache.get(ip)
        if place is not None:
            return place
        place = UNKNOWN_PLACE
        if self._reader is not None and ip:
            place = self._lookup(ip)
        if len(self._cache) >= self._cache_size:
            # drop the oldest entry (dicts keep insertion order): cheap, bounded, good enough
            del self._cache[next(iter(self._cache))]
        self._cache[ip] = place
        return place

    def _lookup(self, ip: str) -> Place:
        try:
            v4 = int.from_bytes(socket.inet_aton(ip), "big") if ip.count(".") == 3 else None
        except OSError:  # inet_aton also takes "1.2.3" forms; only dotted quads take the network path
            v4 = None
        if v4 is not None:
            networks = self._networks
            for length in self._prefixes:
                hit = networks.get((length, v4 >> (32 - length)))
                if hit is not None:
                    return hit
        try:
            record, length = self._reader.get_with_prefix_len(ip)
        except ValueError:  # not an IP address
            return UNKNOWN_PLACE
        place = place_from_record(record)
        if v4 is not None and 0 < length <= 32:
            if len(self._networks) >= self._cache_size:
                self._networks.clear()  # bounded; refills from the database as addresses come
                self._prefixes.clear()
            self._networks[(length, v4 >> (32 - length))] = place
            if length not in self._prefixes:
                self._prefixes.append(length)
                self._prefixes.sort()
        return place

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
