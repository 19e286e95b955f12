"""The local HTTP API (FastAPI) and the staff dashboard; see docs/api.md."""
