"""Keyed, rotating pseudonyms for Bluetooth addresses (a phone's address is personal data).

A plain or salted hash of a 48-bit address can be reversed by brute force, so the pseudonym is
HMAC-SHA256 under a random key that lives only in this object's memory (os.urandom at start and at each
rotation, never written anywhere) and rotates every `rotation_s` (daily by default): after a rotation
nobody, the gateway included, can link new pseudonyms to old ones.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from datetime import datetime


class AddressHasher:
    """Address -> truncated HMAC-SHA256 hex under an in-memory key that rotates on wall-time epochs."""

    __slots__ = ("_epoch", "_key", "_nbytes", "_random", "rotation_s", "rotations")

    def __init__(
        self, rotation_s: float = 86_400.0, nbytes: int = 8, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.rotation_s = rotation_s
        self._nbytes = nbytes
        self._random = random
        self._key = random(32)
        self._epoch: int | None = None
        self.rotations = 0

    def __repr__(self) -> str:
        return f"AddressHasher(rotation_s={self.rotation_s}, rotations={self.rotations})"  # never the key

    def epoch_of(self, now: datetime) -> int:
        """Index of the key period that `now` falls into."""
        return int(now.timestamp() // self.rotation_s)

    def maybe_rotate(self, now: datetime) -> bool:
        """Draw a fresh key when `now` entered a new period; True when it did."""
        epoch = self.epoch_of(now)
        if self._epoch is None:
            self._epoch = epoch
            return False
        if epoch != self._epoch:
            self._epoch = epoch
            self._key = self._random(32)
            self.rotations += 1
            return True
        return False

    def pseudonym(self, address: str) -> str:
        """The current pseudonym of `address` (case and separators do not matter)."""
        norm = address.upper().replace(":", "").replace("-", "").encode()
        return hmac.digest(self._key, norm, "sha256")[: self._nbytes].hex()
