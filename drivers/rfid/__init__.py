"""RFID readers (LLRP, Impinj IoT interface, Zebra IoT Connector) -> smoothed item-level stock events."""
