"""Socket options for the MQTT connections: small packets go out at once and are acknowledged at once.

Brokers usually keep Nagle's algorithm on (mosquitto's `set_tcp_nodelay` is off by default): a broker
holds a small packet (a PUBACK, a 60-byte PUBLISH to a subscriber) while its previous one is not yet
acknowledged at the TCP level, and Linux delays that acknowledgement up to 40 ms when the receiver has
nothing to send back. Measured on the peers job (bench/peers): PUBACKs from the hub came 40-45 ms after the
PUBLISH at 250 messages/s, and readings reached the shelf driver in 40 ms bursts. Acknowledging what was
read at once (TCP_QUICKACK, Linux; it is not sticky, so it is set again after reads) lets the broker's
next packet leave immediately; TCP_NODELAY does the same for our own sends.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def no_delay(sock: Any) -> None:
    """Turn Nagle's algorithm off on `sock` (a socket, an SSL socket or asyncio's TransportSocket)."""
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quick_ack(sock: Any) -> None:
    """Acknowledge what has been received now instead of after the delayed-ACK timer (Linux only)."""
    if sock is not None and _QUICKACK is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
