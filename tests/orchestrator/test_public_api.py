"""The front door: ``orchestrator.__all__`` is exactly what the package exports."""

from __future__ import annotations

import orchestrator


def test_all_equals_the_public_names() -> None:
    public = {n for n in vars(orchestrator) if not n.startswith("_")}
    modules = {"errors", "testing", "cli"}  # public submodules, imported as a side effect
    assert set(orchestrator.__all__) == public - modules
    assert list(orchestrator.__all__) == sorted(
        orchestrator.__all__, key=lambda n: (not n.isupper(), n)
    )
    assert isinstance(orchestrator.__all__, tuple)


def test_every_exported_name_resolves() -> None:
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None, name
