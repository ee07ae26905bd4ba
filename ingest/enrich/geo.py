"""IP address to place, from a MaxMind-format City database (DB-IP City Lite by default)."""

from __future__ import annotations

import mmap
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


class _SearchTree:
    """The database's search tree for IPv4 addresses, walked here to learn which record an address has.

    Many networks share one record (a city), so the record's position in the file is a good cache
    key: the C reader then decodes each record once instead of once per address.
    """

    def __init__(self, path: str, node_count: int, record_size: int, ip_version: int) -> None:
        with open(path, "rb") as f:
            self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.node_count = node_count
        self._read = {24: self._read24, 28: self._read28, 32: self._read32}[record_size]
        node = 0
        if ip_version == 6:  # IPv4 lives under ::/96 in an IPv6 tree
            for _ in range(96):
                if node >= node_count:
                    break
                node = self._read(node, 0)
        self._ipv4_start = node
        self._by_high_16: dict[int, tuple[int, int]] = {}  # first 16 bits → (node, depth): half the walk

    def _read24(self, node: int, bit: int) -> int:
        offset = node * 6 + bit * 3
        return int.from_bytes(self._buf[offset : offset + 3], "big")

    def _read28(self, node: int, bit: int) -> int:
        offset = node * 7  # two 28-bit records share the middle byte
        if bit:
            return int.from_bytes(self._buf[offset + 3 : offset + 7], "big") & 0x0FFFFFFF
        record = int.from_bytes(self._buf[offset : offset + 4], "big")
        return (record >> 8) | ((record & 0xF0) << 20)

    def _read32(self, node: int, bit: int) -> int:
        offset = node * 8 + bit * 4
        return int.from_bytes(self._buf[offset : offset + 4], "big")

    def record_pointer(self, address: int) -> int:
        """The record pointer of an IPv4 address (as an int); ``node_count`` when it has no record."""
        nodes, read = self.node_count, self._read
        start = self._by_high_16.get(address >> 16)
        if start is None:
            node, depth = self._ipv4_start, 0
            while depth < 16 and node < nodes:
                node = read(node, (address >> (31 - depth)) & 1)
                depth += 1
            start = self._by_high_16[address >> 16] = (node, depth)
        node, depth = start
        while depth < 32 and node < nodes:
            node = read(node, (address >> (31 - depth)) & 1)
            depth += 1
        return node

    def close(self) -> None:
        self._buf.close()


class GeoLocator:
    """Memory-mapped database reader with bounded caches: per address, and per database record.

    The C reader's lookup (~15-20 µs, more on a busy machine) mostly decodes the whole record:
    names in ten languages. For IPv4 the search tree is walked here (a few µs) and the place is
    cached per record, so a record is decoded once however many addresses share it.
    Exact, not an approximation: other addresses (IPv6, odd spellings) go to the C reader.
    """

    def __init__(self, path: str, cache_size: int = 200_000) -> None:
        self._reader: Any = None
        self._tree: _SearchTree | None = None
        if path:
            try:
                # the C extension also memory-maps the file; the pure-Python MMAP reader is ~7x slower
                self._reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
            except (ValueError, ImportError):
                self._reader = maxminddb.open_database(path, maxminddb.MODE_MMAP)
            meta = self._reader.metadata()
            if meta.record_size in (24, 28, 32):
                self._tree = _SearchTree(path, meta.node_count, meta.record_size, meta.ip_version)
        self._cache: dict[str, Place] = {}
        self._cache_size = cache_size
        self._records: dict[int, Place] = {}  # record pointer → place

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
        if self._tree is not None:
            try:  # strict dotted quad only: the C reader also takes forms like "1.2.3" or "010.1.1.1"
                address = int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
            except OSError:
                pass
            else:
                pointer = self._tree.record_pointer(address)
                if pointer == self._tree.node_count:
                    return UNKNOWN_PLACE
                if pointer > self._tree.node_count:  # else a broken tree: let the C reader say so
                    place = self._records.get(pointer)
                    if place is None:
                        place = place_from_record(self._reader.get(ip))
                        if len(self._records) >= self._cache_size:
                            self._records.clear()  # bounded; refills from the database as addresses come
                        self._records[pointer] = place
                    return place
        try:
            return place_from_record(self._reader.get(ip))
        except ValueError:  # not an IP address
            return UNKNOWN_PLACE

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()
            self._tree = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
