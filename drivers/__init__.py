"""Device drivers: one module (or package) per device family, each an async source of readings."""
