"""Country and city of a client address, from a MaxMind-format database (DB-IP or GeoLite2)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, NamedTuple

import maxminddb

log = logging.getLogger("h0p.redirect")


class Place(NamedTuple):
    country: str  # ISO 3166-1 alpha-2, "" when unknown
    city: str  # English name, "" when unknown


UNKNOWN = Place("", "")


class GeoLocator:
    """Looks addresses up (results cached by address); without a database everything is unknown."""

    def __init__(self, path: str) -> None:
        self._reader: Any = None
        if path:
            try:
                self._reader = maxminddb.open_database(path)
            except (OSError, ValueError) as exc:
                # Geo rules then never match; redirects themselves must not depend on the file.
                log.warning("geo database %s unusable (%s): country/city rules will not match", path, exc)
        self.locate = lru_cache(maxsize=65536)(self._locate)

    def _locate(self, ip: str) -> Place:
        if self._reader is None or not ip:
            return UNKNOWN
        try:
            data = self._reader.get(ip)
        except ValueError:
            return UNKNOWN
        if not isinstance(data, dict):
            return UNKNOWN
        country = (data.get("country") or {}).get("iso_code") or ""
        city = ((data.get("city") or {}).get("names") or {}).get("en") or ""
        return Place(str(country), str(city))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
