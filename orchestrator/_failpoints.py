"""Named crash points for crash testing (DESIGN §8).

``ORCHESTRATOR_CRASH_AT=<point>[#<n>]`` makes the process SIGKILL itself the n-th time (default
the first) it reaches ``point``; ``ORCHESTRATOR_CRASH_TRACE=<file>`` appends the name of every
point reached, one a line. With neither set, ``failpoint`` is one global lookup and a return.
"""

from __future__ import annotations

import os
import signal

__all__ = ("ENV_CRASH_AT", "ENV_CRASH_TRACE", "configure_from_env", "failpoint")

ENV_CRASH_AT = "ORCHESTRATOR_CRASH_AT"
ENV_CRASH_TRACE = "ORCHESTRATOR_CRASH_TRACE"

_active = False
_crash_point: str | None = None
_crash_after = 1
_trace_fd: int | None = None
_arrivals: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Mark a point a crash test may kill the process at."""
    if _active:
        _arrive(name)


def _arrive(name: str) -> None:
    if _trace_fd is not None:
        # One unbuffered O_APPEND write, so the line survives the SIGKILL that may follow.
        os.write(_trace_fd, (name + "\n").encode())
    if name == _crash_point:
        count = _arrivals[name] = _arrivals.get(name, 0) + 1
        if count == _crash_after:
            os.kill(os.getpid(), signal.SIGKILL)


def configure_from_env(environ: dict[str, str] | None = None) -> None:
    """(Re)read the two environment variables; called once at import."""
    global _active, _crash_point, _crash_after, _trace_fd
    env = os.environ if environ is None else environ
    spec = env.get(ENV_CRASH_AT, "").strip()
    _crash_point, _, count = spec.partition("#")
    _crash_point = _crash_point or None
    if count and not (count.isdigit() and int(count) >= 1):
        raise ValueError(f"{ENV_CRASH_AT}={spec!r}: expected <point> or <point>#<n> with n >= 1")
    _crash_after = int(count) if count else 1
    if _trace_fd is not None:
        os.close(_trace_fd)
        _trace_fd = None
    trace = env.get(ENV_CRASH_TRACE, "").strip()
    if trace:
        _trace_fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    _arrivals.clear()
    _active = _crash_point is not None or _trace_fd is not None


configure_from_env()
