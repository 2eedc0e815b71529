"""What a per-address limit counts.

One IPv4 address is one client; one IPv6 host usually holds a whole /64 (SLAAC, privacy
addresses), so counting full IPv6 addresses would let one host take 2^64 slots. Every
per-address limit of the node (the front's connection cap, the gRPC intake's stream and body
slots, the device endpoint's upload rate) counts the same key, so a client cannot slip past
one of them by rotating addresses that another counts as one."""

from __future__ import annotations

import ipaddress


def real_host(host: str) -> str:
    """The address as the client has it: an IPv4-mapped IPv6 address becomes its IPv4 address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def address_key(host: str) -> str:
    """The IPv4 address (also when IPv4-mapped), or the IPv6 /64; anything else as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
