"""The project's exception tree: one root, subclasses carrying data, not only messages."""

from __future__ import annotations

from dataclasses import dataclass


class EdgeError(Exception):
    """Root of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a store manifest: where it is and how to fix it."""

    file: str
    path: str
    message: str
    line: int | None = None

    def render(self) -> str:
        """Human-readable one-liner: `file:line: path: message`."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(EdgeError):
    """The manifest is invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(i.render() for i in issues))


class DeviceError(EdgeError):
    """A device failed (connection lost, protocol violation); the supervisor restarts it."""

    def __init__(self, device_id: str, reason: str) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"{device_id}: {reason}")


class FrameError(EdgeError):
    """A single frame or payload could not be decoded; it is counted and skipped."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(reason)


class CommandError(EdgeError):
    """A command request was refused; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
