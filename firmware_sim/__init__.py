"""The devices' side of every wire: simulated readers, shelves, scanners, beacons and counters.

`world.World` is the ground truth (what is really on each shelf, who is in the store); each simulator
reads it and speaks its device's real protocol (LLRP over TCP, serial lines on pseudo-terminals,
Modbus-RTU, MQTT JSON, BlueZ over D-Bus) to the gateway's real drivers.
"""
