"""BLE family: bleak scanner driver, advert parsers, beacon registry and health, anonymous zone presence."""
