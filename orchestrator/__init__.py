"""orchestrator: run operational procedures as journaled, resumable state machines.

The engine (this package) knows nothing of sessions: workflows plug in through the
``orchestrator.workflows`` entry point group. Public names are re-exported here only.
"""

from ._clock import RandomIds as RandomIds
from ._clock import SystemClock as SystemClock
from ._context import StepContext as StepContext
from ._failpoints import ENV_CRASH_AT as ENV_CRASH_AT
from ._failpoints import ENV_CRASH_TRACE as ENV_CRASH_TRACE
from ._failpoints import failpoint as failpoint
from ._fs import FileOps as FileOps
from ._fs import atomic_write as atomic_write
from ._fs import close_quietly as close_quietly
from ._fs import ensure_dir as ensure_dir
from ._fs import file_ops as file_ops
from ._fs import remove_stale_temps as remove_stale_temps
from ._fs import safe_join as safe_join
from ._fs import set_file_ops as set_file_ops
from ._journal.file import FileJournal as FileJournal
from ._journal.history import RunHistory as RunHistory
from ._journal.memory import MemoryJournal as MemoryJournal
from ._journal.records import EffectApplied as EffectApplied
from ._journal.records import EffectPlanned as EffectPlanned
from ._journal.records import ErrorInfo as ErrorInfo
from ._journal.records import Record as Record
from ._journal.records import RunFinished as RunFinished
from ._journal.records import RunResumed as RunResumed
from ._journal.records import RunStarted as RunStarted
from ._journal.records import StepFinished as StepFinished
from ._journal.records import StepStarted as StepStarted
from ._machine import Decision as Decision
from ._machine import DecisionTable as DecisionTable
from ._ports import Clock as Clock
from ._ports import IdFactory as IdFactory
from ._ports import Journal as Journal
from ._registry import Command as Command
from ._registry import DiagramExample as DiagramExample
from ._registry import WorkflowPlugin as WorkflowPlugin
from ._registry import load_plugins as load_plugins
from ._runner import Engine as Engine
from ._runner import RecoveryReport as RecoveryReport
from ._runner import RunHandle as RunHandle
from ._runner import RunResult as RunResult
from ._runner import open_engine as open_engine
from ._spec import OUTCOMES as OUTCOMES
from ._spec import SUCCEED as SUCCEED
from ._spec import Fail as Fail
from ._spec import Outcome as Outcome
from ._spec import Retry as Retry
from ._spec import State as State
from ._spec import StepFn as StepFn
from ._spec import Succeed as Succeed
from ._spec import WorkflowSpec as WorkflowSpec
from ._spec import fail as fail
from ._spec import retry as retry

__version__ = "0.1.0"

__all__ = (
    "ENV_CRASH_AT",
    "ENV_CRASH_TRACE",
    "OUTCOMES",
    "SUCCEED",
    "Clock",
    "Command",
    "Decision",
    "DecisionTable",
    "DiagramExample",
    "EffectApplied",
    "EffectPlanned",
    "Engine",
    "ErrorInfo",
    "Fail",
    "FileJournal",
    "FileOps",
    "IdFactory",
    "Journal",
    "MemoryJournal",
    "Outcome",
    "RandomIds",
    "Record",
    "RecoveryReport",
    "Retry",
    "RunFinished",
    "RunHandle",
    "RunHistory",
    "RunResult",
    "RunResumed",
    "RunStarted",
    "State",
    "StepContext",
    "StepFinished",
    "StepFn",
    "StepStarted",
    "Succeed",
    "SystemClock",
    "WorkflowPlugin",
    "WorkflowSpec",
    "atomic_write",
    "close_quietly",
    "ensure_dir",
    "fail",
    "failpoint",
    "file_ops",
    "load_plugins",
    "open_engine",
    "remove_stale_temps",
    "retry",
    "safe_join",
    "set_file_ops",
)
