"""Simulated RFID readers (LLRP, Impinj IoT HTTP stream, Zebra IoT Connector MQTT) reading the World."""
