"""Foot traffic: door counts and BLE zone presence aggregated per interval and hour (pure, clock-injected)."""
