"""What every system under test has in common: one child process, its log, stop by PID."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


class PeerProcess:
    """A peer's process (Node-RED, our daemon): PID, liveness, log tail, SIGTERM then SIGKILL."""

    log_name = "stdout.log"
    stop_timeout_s = 10.0

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    def pids(self) -> list[int]:
        """The process's PID while it runs."""
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def alive(self) -> bool:
        """Still running?"""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        """The end of its output."""
        p = (self.workdir / self.log_name) if self.workdir else None
        return p.read_text(errors="replace")[-1500:] if p and p.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID (a clean shutdown), SIGKILL after `stop_timeout_s`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
