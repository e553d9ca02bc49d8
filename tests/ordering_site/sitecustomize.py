"""The ordering checker in the test suite's child processes (``tests/ordering.py``).

The suite's ``ordering_checker`` fixture puts this directory on ``PYTHONPATH`` and names a log
file in ``ORDERING_CHECK_LOG``; every Python child a test starts (the CLI in the crash sweeps,
the workers of the shared-journal tests) then runs under a checker of its own, which appends
each violation to that file the moment it sees it (a child may be SIGKILLed next).
"""

import os
import sys
from pathlib import Path

if os.environ.get("ORDERING_CHECK_LOG"):
    sys.path.append(str(Path(__file__).resolve().parents[2]))  # for ``tests.ordering``
    from tests.ordering import install_from_env

    install_from_env()
