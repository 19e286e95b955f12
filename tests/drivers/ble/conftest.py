"""A private dbus-daemon with python-dbusmock's bluez5 template, for bleak to scan through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_sim.ble import PrivateBluez


@pytest.fixture
async def bluez(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[PrivateBluez]:
    """dbus-daemon + bluez5 mock with adapter hci0; DBUS_SYSTEM_BUS_ADDRESS points bleak at it."""
    bz = PrivateBluez(tmp_path / "bluez-mock.log")
    try:
        address = await bz.start()
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        await bz.add_adapter("hci0")
        yield bz
    finally:
        await bz.stop()  # kills both processes by PID
