"""Smart-store edge gateway: store devices -> stock and traffic events -> durable MQTT uplink."""

__version__ = "0.1.0"
