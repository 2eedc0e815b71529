"""What a call may hold before its request is whole, authenticated and admitted (issue 16).

A gRPC call starts with HEADERS; its body may follow slowly or never. The server
runs on grpc.aio, so a waiting call costs no thread, but it still costs memory: once
the node asks gRPC for the message, HTTP/2 flow control lets the peer send the whole
declared message (up to max_message_bytes) and gRPC buffers it until it is complete.
So a body is read only after the caller is authenticated, only under a receive slot
(`receive_bodies_per_peer` per IP address, `receive_bodies_per_caller` per API key,
`receive_bodies_total` in all, each worth at most max_message_bytes: total bytes held for
unadmitted requests <= total x max message), and only within `body_timeout_seconds`.
The per-key cap is what keeps a leaked key used from many addresses from taking every
slot (measured: 20 addresses, one key, 12 body-less streams each: without it nearly every
genuine call got RECEIVE_BUSY); without configured callers (development) it does not
apply. Calls open at once are also capped per IP address, whatever number of connections
they come over; the address is the client's own, resolved through the connection front
(`PeerAddresses`), and connections per address are capped there (idv/front.py). All of this runs on the event loop thread only: no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from idv.address_keys import address_key

from idv.errors import DeadlineExceeded, IdvError, InvalidRequest


@dataclass(frozen=True)
class IntakeLimits:
    max_streams_per_peer: int = 16
    receive_bodies_per_peer: int = 2
    receive_bodies_per_caller: int = 4
    receive_bodies_total: int = 12
    body_timeout_seconds: float = 5.0
    max_message_bytes: int = 24 * 512 * 1024 + 64 * 1024

    @property
    def max_unadmitted_bytes(self) -> int:
        """The most request bytes the node buffers for calls not yet admitted."""
        return self.receive_bodies_total * self.max_message_bytes


def peer_address(peer: str) -> str:
    """The IP address of a grpc peer string ('ipv4:1.2.3.4:5678', 'ipv6:[::1]:5678', 'unix:...')."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or peer


def _peer_port(peer: str) -> int | None:
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    port = rest.rpartition(":")[2]
    return int(port) if port.isdigit() else None


class PeerAddresses:
    """The real address behind a grpc peer string.

    Behind the connection front (idv/front.py) every call comes from 127.0.0.1 on the port of the
    front's server connection; `original_peer` (the front's map, injected by the node) turns that
    port back into the client's address, so the per-address limits below count real clients. A
    peer the front does not know (no front, or a local process that connected to the private
    port directly) is counted under its own address."""

    def __init__(self, original_peer: Callable[[int], tuple[str, int] | None] | None = None,
                 front_host: str = "127.0.0.1"):
        self._original_peer = original_peer
        self._front_host = front_host

    def of(self, peer: str) -> str:
        """The key the per-address limits count for this peer (idv/address_keys.py: an IPv6
        client counts as its /64, as the front counts it)."""
        address = peer_address(peer)
        if self._original_peer is not None and address == self._front_host:
            port = _peer_port(peer)
            original = self._original_peer(port) if port is not None else None
            if original is not None:
                return address_key(original[0])
        return address_key(address)


class PeerIntake:
    """Counts of open calls and bodies being received, per peer address and in total."""

    def __init__(self, limits: IntakeLimits, addresses: PeerAddresses | None = None):
        self.limits = limits
        self.addresses = addresses or PeerAddresses()
        self._streams: dict[str, int] = {}
        self._receiving: dict[str, int] = {}
        self._receiving_by_caller: dict[str, int] = {}
        self.receiving_total = 0

    def open_stream(self, address: str) -> bool:
        count = self._streams.get(address, 0)
        if count >= self.limits.max_streams_per_peer:
            return False
        self._streams[address] = count + 1
        return True

    def close_stream(self, address: str) -> None:
        _decrement(self._streams, address)

    def start_receiving(self, address: str, caller: str | None) -> bool:
        """Take a receive slot; `caller` is the API key's caller name, None when callers are not configured."""
        count = self._receiving.get(address, 0)
        by_caller = self._receiving_by_caller.get(caller, 0) if caller is not None else 0
        if (count >= self.limits.receive_bodies_per_peer or by_caller >= self.limits.receive_bodies_per_caller
                or self.receiving_total >= self.limits.receive_bodies_total):
            return False
        self._receiving[address] = count + 1
        if caller is not None:
            self._receiving_by_caller[caller] = by_caller + 1
        self.receiving_total += 1
        return True

    def stop_receiving(self, address: str, caller: str | None) -> None:
        _decrement(self._receiving, address)
        if caller is not None:
            _decrement(self._receiving_by_caller, caller)
        self.receiving_total -= 1

    @property
    def open_streams(self) -> int:
        return sum(self._streams.values())


def _decrement(counts: dict[str, int], key: str) -> None:
    count = counts.pop(key, 1) - 1
    if count > 0:
        counts[key] = count


async def read_single_message(context: grpc.aio.ServicerContext, timeout: float) -> tuple[bytes, IdvError | None]:
    """The single request message and the end of the request stream, both within `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        raw = await asyncio.wait_for(context.read(), max(timeout, 0.0))
        if raw is grpc.aio.EOF:
            # The peer half-closed without a message, or gRPC refused the message (larger than
            # max_message_bytes; the caller already has RESOURCE_EXHAUSTED). The application cannot
            # tell them apart reliably, so they are counted as one cause.
            return b"", InvalidRequest("the call carried no whole request message", "NO_WHOLE_MESSAGE")
        end = await asyncio.wait_for(context.read(), max(deadline - time.monotonic(), 0.0))
    except asyncio.TimeoutError:
        return b"", DeadlineExceeded("the request body did not arrive in time", "BODY_TIMEOUT")
    if end is not grpc.aio.EOF:
        return b"", InvalidRequest("a call carries exactly one request message", "EXTRA_MESSAGE")
    return raw, None
