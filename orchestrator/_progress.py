"""A progress bar for long work, on stderr, only for a person watching a terminal.

``with progress(total, "exporting runs") as advance: ... advance()`` draws a rich progress bar
on stderr when stderr is a terminal, and does nothing when it is piped or redirected, when
the command prints ``--json`` (pass ``enabled=False``), or when there is too little work to be
worth a bar (``min_total``). The bar is transient: it is erased when the work ends, so it never
mixes with what the command prints afterwards. Commands that go through many runs (``runs
list``, ``audit export``, and ``recover`` once it reports progress) share this one helper.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

__all__ = ("Advance", "is_terminal", "progress")


class Advance(Protocol):
    def __call__(self, steps: int = 1) -> None:
        """Count ``steps`` more units of work done."""
        ...


def _nothing(steps: int = 1) -> None:
    return None


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an open terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


@contextmanager
def progress(
    total: int,
    description: str,
    *,
    enabled: bool = True,
    min_total: int = 0,
    stream: TextIO | None = None,
) -> Iterator[Advance]:
    """Yield an ``advance(steps=1)`` callable; see the module docstring for when it draws."""
    stream = sys.stderr if stream is None else stream
    if not enabled or total < min_total or not is_terminal(stream):
        yield _nothing
        return
    # rich is imported only when a bar is drawn: piped and --json runs never pay for it.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(file=stream)
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns,
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(steps: int = 1) -> None:
            bar.advance(task, steps)

        yield advance
