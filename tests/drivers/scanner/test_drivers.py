"""Scanner drivers: serial mode on a real pty (with the simulated scanner), wedge key decoding, evdev absent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.scanner.config import ScannerHidConfig, ScannerSerialConfig
from drivers.scanner.hid import KeyDecoder, ScannerHidDriver
from drivers.scanner.processor import ScannerProcessor
from drivers.scanner.reads import Scan
from drivers.scanner.serial import ScannerSerialDriver, split_scan
from edge.clock import SystemClock
from edge.config import Manifest
from edge.driver import DeviceOnline, DriverContext, Malformed, Reading
from edge.errors import DeviceError
from edge.events import Event
from edge.processing import StockUpdate
from firmware_sim.scanner import ScannerSimPart
from firmware_sim.world import World


@pytest.mark.parametrize(
    ("raw", "term", "want"),
    [
        (b"]C1010544900000099610AB\x1d21X\r", "CR", "]C1010544900000099610AB\x1d21X"),
        (b"5449000000996\n", "LF", "5449000000996"),
        (b"5449000000996\r\n", "CRLF", "5449000000996"),
        (b"\xff\xfe\r", "CR", None),
    ],
)
def test_split(raw: bytes, term: str, want: str | None) -> None:
    assert split_scan(raw, term) == want


async def test_restock_flow_from_world(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    part = ScannerSimPart()
    sections = await part.start(world, tmp_path, None)
    cfg = ScannerSerialConfig.model_validate(sections[0])
    proc = ScannerProcessor(demo_manifest.model_copy(update={"devices": [cfg]}), SystemClock())
    drv = ScannerSerialDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    stream = drv.stream()
    got: list[Reading] = []
    types: list[str] = []
    try:
        async with asyncio.timeout(10):
            async for r in stream:
                got.append(r)
                if isinstance(r, DeviceOnline):
                    world.pick("shelf-a1", "l1", 3)
                    assert part.sim is not None
                    part.sim.port.write(b"\xff\xfe\r")
                    world.restock("shelf-a1", "l1", 3)
                for o in proc.feed(r, r.time):
                    if isinstance(o, StockUpdate):
                        types.append(f"delta {o.delta}")
                    elif isinstance(o, Event):
                        types.append(o.TYPE)
                if "retail.restock.finished.v1" in types:
                    break
    finally:
        await stream.aclose()
        await part.stop()
    assert any(isinstance(r, Malformed) for r in got)
    assert types == ["retail.restock.started.v1", "delta 1", "delta 1", "delta 1", "retail.restock.finished.v1"]
    assert all(s.value.startswith(("SHELF:", "]C1", "RESTOCK:")) for s in got if isinstance(s, Scan))


async def test_serial_scanner_unplugged(demo_manifest: Manifest, tmp_path: Path) -> None:
    world = World(demo_manifest, SystemClock())
    part = ScannerSimPart()
    sections = await part.start(world, tmp_path, None)
    drv = ScannerSerialDriver(
        ScannerSerialConfig.model_validate(sections[0]),
        DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path),
    )
    stream = drv.stream()
    assert isinstance(await anext(stream), DeviceOnline)
    await part.stop()
    with pytest.raises((DeviceError, OSError)):
        async with asyncio.timeout(5):
            await anext(stream)


def test_wedge_key_decoding() -> None:
    dec = KeyDecoder()
    keys = [
        ("KEY_LEFTSHIFT", True),
        ("KEY_S", True),
        ("KEY_S", False),
        ("KEY_LEFTSHIFT", False),
        ("KEY_H", True),
        ("KEY_LEFTSHIFT", True),
        ("KEY_SEMICOLON", True),
        ("KEY_LEFTSHIFT", False),
        ("KEY_A", True),
        ("KEY_MINUS", True),
        ("KEY_1", True),
        ("KEY_ENTER", True),
    ]
    out = [dec.key(k, d) for k, d in keys]
    assert out[-1] == "Sh:a-1"
    assert out[:-1] == [None] * (len(keys) - 1)
    assert dec.key("KEY_ENTER", True) is None  # empty scans are not scans


async def test_hid_without_device(demo_manifest: Manifest, tmp_path: Path) -> None:
    cfg = ScannerHidConfig(id="wedge", device_path=str(tmp_path / "no-such-event"))
    drv = ScannerHidDriver(cfg, DriverContext(manifest=demo_manifest, clock=SystemClock(), data_dir=tmp_path))
    with pytest.raises(DeviceError, match=r"hid extra|cannot open"):
        await anext(drv.stream())
