from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import file_ops
from orchestrator._fs import layer_file_ops

from .ordering import ENV_LOG, OrderingChecker

#: The directory whose ``sitecustomize`` starts the checker in child processes.
SITE = Path(__file__).parent / "ordering_site"

#: How many distinct violations a failing test lists.
SHOWN_VIOLATIONS = 20


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(autouse=True)
def ordering_checker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrderingChecker]:
    """Every test's file operations go through the ordering checker (``tests/ordering.py``),
    and so do those of the Python processes it starts (``tests/ordering_site``: they log
    what they see to a file); a test that broke the rule fails at teardown, listing what it
    did. A test that breaks the rule on purpose takes this fixture and clears
    ``violations`` once it has checked them."""
    checker = OrderingChecker(file_ops())
    log = _child_log(tmp_path_factory)
    saved = {name: os.environ.get(name) for name in (ENV_LOG, "PYTHONPATH")}
    os.environ[ENV_LOG] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), saved["PYTHONPATH"]]))
    layer_file_ops(checker.around)
    try:
        yield checker
    finally:
        layer_file_ops(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    found = checker.violations + (log.read_text().splitlines() if log.exists() else [])
    if found:
        pytest.fail(describe(found, str(tmp_path_factory.getbasetemp())), False)


def _child_log(factory: pytest.TempPathFactory) -> Path:
    """A file no child has written yet, for this test's children (outside its tmp_path,
    which some tests list)."""
    global _logs
    if _logs is None:
        _logs = factory.mktemp("ordering-children")
    return _logs / f"{next(_numbers)}.log"


_logs: Path | None = None
_numbers = itertools.count()


def describe(violations: list[str], tmp: str) -> str:
    counted = Counter(v.replace(tmp, "<tmp>") for v in violations)
    lines = [
        f"  {v}" + (f" (x{n})" if n > 1 else "")
        for v, n in list(counted.items())[:SHOWN_VIOLATIONS]
    ]
    more = len(counted) - SHOWN_VIOLATIONS
    if more > 0:
        lines.append(f"  ... and {more} more")
    return (
        f"the ordering checker (tests/ordering.py) saw {len(violations)} violation(s) of "
        "'no effect before its intent is durable, no completion record before the effect "
        "is durable':\n" + "\n".join(lines)
    )
