"""Smart shelves: load-cell lanes (serial MCU, Modbus-RTU transmitters, MQTT shelves) -> exact item counts.

Spec of the serial line protocol: docs/shelf-protocol.md. The count engine (`engine.py`) is pure and clocked
by the samples' own times, so it runs the same in tests, simulations and the gateway.
"""
