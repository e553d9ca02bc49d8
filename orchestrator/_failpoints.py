"""Named crash points for crash testing (DESIGN §8).

``ORCHESTRATOR_CRASH_AT=<point>[#<n>]`` makes the process SIGKILL itself the n-th time (default
the first) it reaches ``point``; ``ORCHESTRATOR_PAUSE_AT=<point>[#<n>]`` makes it SIGSTOP
itself there instead (a host frozen mid-run, as in a network partition: its leases expire
while it cannot act; SIGCONT resumes it); ``ORCHESTRATOR_CRASH_TRACE=<file>`` appends the name
of every point reached, one a line. With none set, ``failpoint`` is one global lookup and a
return.
"""

from __future__ import annotations

import os
import signal

__all__ = ("ENV_CRASH_AT", "ENV_CRASH_TRACE", "ENV_PAUSE_AT", "configure_from_env", "failpoint")

ENV_CRASH_AT = "ORCHESTRATOR_CRASH_AT"
ENV_PAUSE_AT = "ORCHESTRATOR_PAUSE_AT"
ENV_CRASH_TRACE = "ORCHESTRATOR_CRASH_TRACE"

_active = False
#: point -> (arrival that triggers, signal sent to this process)
_triggers: dict[str, tuple[int, signal.Signals]] = {}
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
    trigger = _triggers.get(name)
    if trigger is not None:
        count = _arrivals[name] = _arrivals.get(name, 0) + 1
        if count == trigger[0]:
            os.kill(os.getpid(), trigger[1])


def configure_from_env(environ: dict[str, str] | None = None) -> None:
    """(Re)read the environment variables; called once at import."""
    global _active, _trace_fd
    env = os.environ if environ is None else environ
    _triggers.clear()
    for variable, sig in ((ENV_PAUSE_AT, signal.SIGSTOP), (ENV_CRASH_AT, signal.SIGKILL)):
        spec = env.get(variable, "").strip()
        point, _, count = spec.partition("#")
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"{variable}={spec!r}: expected <point> or <point>#<n> with n >= 1")
        if point:
            _triggers[point] = (int(count) if count else 1, sig)
    if _trace_fd is not None:
        os.close(_trace_fd)
        _trace_fd = None
    trace = env.get(ENV_CRASH_TRACE, "").strip()
    if trace:
        _trace_fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    _arrivals.clear()
    _active = bool(_triggers) or _trace_fd is not None


configure_from_env()
