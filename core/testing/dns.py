"""A fake resolver for the outbound guard (``core.http.resolve_host``): no test resolves real names.

IP literals resolve to themselves, ``localhost`` to 127.0.0.1, names a test
registered with :meth:`FakeResolver.add` to their addresses; any other name
does not resolve (``socket.gaierror``), as on a machine without DNS.
"""

from __future__ import annotations

import ipaddress
import socket


class FakeResolver:
    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"localhost": ["127.0.0.1"]}
        self.lookups: list[str] = []

    def add(self, name: str, *addresses: str) -> None:
        self.names[name.lower().rstrip(".")] = list(addresses)

    def __call__(self, host: str, port: int | None) -> list[str]:
        self.lookups.append(host)
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        addresses = self.names.get(host.lower().rstrip("."))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"fake resolver: {host} is unknown")
        return list(addresses)
