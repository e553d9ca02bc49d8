"""Workflows plug in through the ``orchestrator.workflows`` entry point group.

An entry point names an object with ``specs()``, ``deps(state_dir)`` and ``commands()``; the
engine registers each spec with the deps its plugin builds for the state directory, and the
command line adds the plugin's commands. So the engine never imports a workflow package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import UsageError

if TYPE_CHECKING:
    import argparse

    from ._journal.history import RunHistory
    from ._spec import WorkflowSpec

__all__ = (
    "ENTRY_POINT_GROUP",
    "Command",
    "DiagramExample",
    "WorkflowPlugin",
    "diagram_examples",
    "load_plugins",
)

ENTRY_POINT_GROUP = "orchestrator.workflows"


@dataclass(frozen=True, slots=True)
class Command:
    """A command a plugin adds to the command line.

    ``configure`` adds its arguments to the subparser; ``run`` gets the parsed arguments and
    returns the exit code.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Awaitable[int]] | None
    description: str = ""
    #: Commands under this one (``orchestrator runs list``); ``run`` is then None.
    subcommands: Sequence[Command] = ()


@dataclass(frozen=True, slots=True)
class DiagramExample:
    """A run drawn into ``diagrams/`` as an example: ``make`` runs it and returns its history.

    It must be deterministic (fake clock, counting ids, memory host) so the committed diagram
    can be checked for freshness.
    """

    name: str
    workflow: str
    make: Callable[[], Awaitable[RunHistory]]


@runtime_checkable
class WorkflowPlugin(Protocol):
    def specs(self) -> Sequence[WorkflowSpec]:
        """The workflows this plugin provides."""
        ...

    def deps(self, state_dir: Path) -> Any:
        """The host adapters its steps use, for the state directory ``state_dir``."""
        ...

    def commands(self) -> Sequence[Command]:
        """Extra commands for the command line."""
        ...


def diagram_examples(plugin: WorkflowPlugin) -> Sequence[DiagramExample]:
    """A plugin's example runs for ``diagrams/`` (optional: ``diagram_examples()``)."""
    provide = getattr(plugin, "diagram_examples", None)
    return list(provide()) if provide is not None else []


def load_plugins(group: str = ENTRY_POINT_GROUP) -> list[WorkflowPlugin]:
    """Every installed plugin of ``group``, in entry point name order."""
    plugins: list[WorkflowPlugin] = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            plugin = point.load()
        except Exception as exc:
            raise UsageError(
                f"cannot load workflow plugin {point.name!r} ({point.value}): "
                f"{type(exc).__name__}: {exc}; reinstall the package that provides it"
            ) from exc
        if not isinstance(plugin, WorkflowPlugin):
            raise UsageError(
                f"workflow plugin {point.name!r} ({point.value}) lacks specs(), deps() or "
                "commands()"
            )
        plugins.append(plugin)
    return plugins
