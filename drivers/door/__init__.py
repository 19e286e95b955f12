"""Door counters: bidirectional people counters over a serial line protocol or MQTT JSON."""
