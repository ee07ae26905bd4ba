"""A real DNS server on loopback (dnslib) answering the TXT records a test publishes."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.services import free_port


class TxtZone(BaseResolver):  # type: ignore[misc]
    """Answers TXT queries from ``records``; any other name is NXDOMAIN."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in self.records[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(value), ttl=1))
        return reply


class LoopbackDns:
    """A UDP DNS server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.zone = TxtZone()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.server = DNSServer(
            self.zone,
            address="127.0.0.1",
            port=self.port,
            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", False),
        )

    def start(self) -> LoopbackDns:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()
