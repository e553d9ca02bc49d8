from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from orchestrator import file_ops
from orchestrator._fs import layer_file_ops

from .ordering import OrderingChecker

#: How many distinct violations a failing test lists.
SHOWN_VIOLATIONS = 20


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(autouse=True)
def ordering_checker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrderingChecker]:
    """Every test's file operations go through the ordering checker (``tests/ordering.py``);
    a test that broke the rule fails at teardown, listing what it did. A test that breaks
    the rule on purpose takes this fixture and clears ``violations`` once it has checked
    them."""
    checker = OrderingChecker(file_ops())
    layer_file_ops(checker.around)
    try:
        yield checker
    finally:
        layer_file_ops(None)
    if checker.violations:
        pytest.fail(describe(checker.violations, str(tmp_path_factory.getbasetemp())), False)


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
