"""The one way the tests run `python -m dbops`: from the project root, in a minimal environment.

Only PATH, HOME and the locale come from this process; everything else the command reads (DATABASE_URL,
GAIA_DB_*, cloud credentials) must be given, so a test proves the command needs nothing more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("PATH", "HOME", "LANG", "LC_ALL")


def dbops_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dbops", *args]


def dbops_env(env: Mapping[str, str | None] | None = None, *, path: str | None = None) -> dict[str, str]:
    """The minimal environment plus `env` (a None value leaves that variable unset); `path` replaces PATH."""
    base = {name: os.environ[name] for name in KEPT if name in os.environ}
    if path is not None:
        base["PATH"] = path
    return {**base, **{k: v for k, v in (env or {}).items() if v is not None}}


def run_dbops(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    path: str | None = None,
    cwd: Path = ROOT,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m dbops <args>` with `dbops_env(env, path=path)`, output captured as text."""
    return subprocess.run(dbops_argv(*args), cwd=cwd, env=dbops_env(env, path=path), capture_output=True, text=True,
                          timeout=timeout)


class Background:
    """`python -m dbops <args>` running while the test goes on; its output is read as it comes, so a test can wait
    for a progress line instead of sleeping. Use it as a context manager: on the way out a child still running is
    killed and reaped, whatever the test's outcome."""

    def __init__(self, *args: str, env: Mapping[str, str | None] | None = None, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(dbops_argv(*args), cwd=cwd, env=dbops_env(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out: list[str] = []
        self._err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stderr_so_far(self) -> str:
        with self._changed:
            return "".join(self._err)

    def _stderr_has(self, text: str) -> bool:
        return any(text in line for line in self._err)

    def wait_for_stderr(self, text: str, timeout: float = 60) -> bool:
        """Whether a stderr line containing `text` arrived (False if the child ended first or after `timeout`,
        a safety net only)."""
        with self._changed:
            self._changed.wait_for(lambda: self._stderr_has(text) or not self._readers[1].is_alive(), timeout)
            return self._stderr_has(text)

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Wait for the child (at most `timeout`, a safety net) and return its exit status and whole output."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "".join(self._out),
                                           "".join(self._err))

    def __enter__(self) -> Background:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(10)  # the pipes reach EOF once the child is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def error_line(stderr: str) -> str:
    """The CLI's error: the last stderr line, which must be the only `error:` line and come with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == lines[0], stderr
    return lines[0]
