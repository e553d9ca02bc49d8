"""Diagrams of a workflow and of one run's path, drawn from the decision table's machine.

The edges come from the same ``transitions.Machine`` the runner decides with (its events and
states), so a diagram cannot drift from what runs. A run's path is overlaid from its journal
alone: taken edges numbered in order and coloured by outcome, with attempt and duration;
untaken edges faded; the failing step red; where an interrupted run stopped, marked.

Output is deterministic (same definition and journal, same text), so generated diagrams can
be committed and checked for freshness.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass, field

from ._journal.history import RunHistory
from ._journal.records import RunFinished, RunResumed, StepFinished, StepStarted
from ._machine import RETRY_CONDITION, SUCCEEDED, DecisionTable
from ._spec import OUTCOMES, Retry, WorkflowSpec
from .errors import UsageError

__all__ = ("Edge", "RunPath", "dot", "edges", "mermaid", "run_path", "svg")

START = "start"
COLOURS = {"ok": "#2e7d32", "timeout": "#ef6c00", "error": "#c62828"}
FADED = "#c8c8c8"


@dataclass(frozen=True, slots=True)
class Edge:
    """A transition of the machine: ``outcomes`` lead from ``src`` to ``dest``."""

    src: str
    dest: str
    outcomes: tuple[str, ...]
    #: Retry budget when this is a retry self-loop, else 0.
    retry: int = 0

    def label(self) -> str:
        text = ", ".join(self.outcomes)
        return f"{text}: retry, {self.retry} attempts in all" if self.retry else text


def edges(table: DecisionTable) -> list[Edge]:
    """Every transition, in state order then outcome order; same-target outcomes merged."""
    machine = table.machine
    found: dict[tuple[str, str, bool], list[str]] = {}
    for state in table.spec.states:
        for outcome in OUTCOMES:
            target = state.on[outcome]
            for transition in machine.events[outcome].transitions[state.name]:
                looped = any(c.func == RETRY_CONDITION for c in transition.conditions)
                word: str = outcome
                if isinstance(target, Retry) and not looped:
                    word = f"{outcome} (after {target.max_attempts})"
                found.setdefault((state.name, str(transition.dest), looped), []).append(word)
    result = []
    for (src, dest, looped), outcomes in found.items():
        budget = 0
        if looped:
            target = table.spec.by_name[src].on[outcomes[0]]
            assert isinstance(target, Retry)
            budget = target.max_attempts
        result.append(Edge(src, dest, tuple(outcomes), budget))
    return result


@dataclass(frozen=True, slots=True)
class Traversal:
    number: int
    edge: Edge
    outcome: str
    attempt: int
    duration: float
    forced: bool


@dataclass(slots=True)
class RunPath:
    """What one run did, as edges of its workflow's machine."""

    run_id: str
    traversals: list[Traversal] = field(default_factory=list)
    #: (state, attempt) of attempts cut short by a crash.
    interrupted: list[tuple[str, int]] = field(default_factory=list)
    #: The run's end: succeeded, failed, cancelled, or None while unfinished.
    status: str | None = None
    #: The failing (or cancelled) step, or where an unfinished run stopped.
    last_state: str | None = None


def run_path(history: RunHistory, table: DecisionTable) -> RunPath:
    by_key = {(e.src, e.dest, bool(e.retry)): e for e in edges(table)}
    path = RunPath(history.run_id)
    started: StepStarted | None = None
    visit_state, tried = None, 0
    for record in history.records:
        if isinstance(record, StepStarted):
            if started is not None:
                path.interrupted.append((started.step, started.attempt))
            started = record
            path.last_state = record.step
        elif isinstance(record, RunResumed) and started is not None:
            path.interrupted.append((started.step, started.attempt))
            started = None
        elif isinstance(record, StepFinished):
            started = None
            tried = tried + 1 if visit_state == record.step else 1
            visit_state = record.step
            dest, looped = _destination(table, record.step, record.outcome, tried)
            edge = by_key[(record.step, dest, looped)]
            path.traversals.append(
                Traversal(
                    len(path.traversals) + 1,
                    edge,
                    record.outcome,
                    record.attempt,
                    record.duration,
                    record.forced,
                )
            )
            path.last_state = record.step if looped or dest not in table.spec.by_name else dest
        elif isinstance(record, RunFinished):
            path.status = record.status
            path.last_state = record.step
    if started is not None and path.status is None:
        path.interrupted.append((started.step, started.attempt))
    return path


def _destination(table: DecisionTable, state: str, outcome: str, tried: int) -> tuple[str, bool]:
    decision = table.decide(state, outcome)  # type: ignore[arg-type]
    if decision.retry is not None and tried < decision.retry.max_attempts:
        return state, True
    if decision.next_state is not None:
        return decision.next_state, False
    if decision.succeed:
        return SUCCEEDED, False
    assert decision.fail is not None
    return f"failed:{decision.fail.code}", False


# -- Mermaid --------------------------------------------------------------------------------


def _mid(name: str) -> str:
    return name.replace(":", "_")


def _terminals(table: DecisionTable) -> list[str]:
    names = [s.name for s in table.spec.states]
    return [str(s) for s in table.machine.states if s not in names]


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _traversal_text(t: Traversal) -> str:
    forced = ", forced" if t.forced else ""
    return f"{t.number}. {t.outcome}, attempt {t.attempt}, {_duration(t.duration)}{forced}"


def mermaid(spec: WorkflowSpec, path: RunPath | None = None) -> str:
    """A Mermaid flowchart (left to right) of ``spec``, with ``path`` overlaid if given."""
    table = DecisionTable(spec)
    title = spec.name if path is None else f"{spec.name} run {path.run_id}"
    lines = ["---", f"title: {title}", "---", "flowchart LR"]
    lines.append(f"    {START}(( )) --> {spec.initial}")
    for state in spec.states:
        lines.append(f'    {state.name}["{state.name}"]')
    for name in _terminals(table):
        text = "succeeded" if name == SUCCEEDED else name.replace(":", ": ")
        lines.append(f'    {_mid(name)}(["{text}"])')
    styles: list[str] = []
    for index, edge in enumerate(edges(table), start=1):
        label = edge.label()
        taken = [t for t in path.traversals if t.edge == edge] if path else []
        if taken:
            label = "<br>".join(_traversal_text(t) for t in taken)
            styles.append(
                f"    linkStyle {index} stroke:{COLOURS[taken[-1].outcome]},"
                f"stroke-width:3px,color:{COLOURS[taken[-1].outcome]}"
            )
        elif path is not None:
            styles.append(f"    linkStyle {index} stroke:{FADED},color:{FADED}")
        lines.append(f'    {_mid(edge.src)} -->|"{label}"| {_mid(edge.dest)}')
    lines += [
        "    classDef terminal fill:#f5f5f5,stroke:#777",
        "    classDef failure fill:#ffebee,stroke:#c62828,color:#b71c1c",
        "    classDef success fill:#e8f5e9,stroke:#2e7d32",
        "    classDef interrupted fill:#fff3e0,stroke:#ef6c00,stroke-dasharray:5 3",
    ]
    for name in _terminals(table):
        lines.append(f"    class {_mid(name)} {'success' if name == SUCCEEDED else 'failure'}")
    if path is not None:
        lines += _mermaid_marks(path)
    return "\n".join(lines + styles) + "\n"


def _mermaid_marks(path: RunPath) -> list[str]:
    marks = []
    if path.status == "failed" and path.last_state:
        marks.append(f"    class {path.last_state} failure")
    for state in dict.fromkeys(s for s, _ in path.interrupted):
        marks.append(f"    class {state} interrupted")
    if path.status is None and path.last_state:
        marks.append('    stopped[/"interrupted: resume with orchestrator recover"/]')
        marks.append(f"    {path.last_state} -.- stopped")
        marks.append("    class stopped interrupted")
    return marks


# -- Graphviz -------------------------------------------------------------------------------


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(spec: WorkflowSpec, path: RunPath | None = None) -> str:
    """A Graphviz digraph of ``spec`` (left to right), with ``path`` overlaid if given."""
    table = DecisionTable(spec)
    title = spec.name if path is None else f"{spec.name} run {path.run_id}"
    out = [
        f"digraph {_q(spec.name)} {{",
        f"  graph [rankdir=LR, label={_q(title)}, labelloc=t, fontname=Helvetica];",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica];',
        "  edge [fontname=Helvetica, fontsize=10];",
        f'  {START} [shape=circle, label="", width=0.25, fillcolor=black];',
    ]
    failed = path.last_state if path and path.status == "failed" else None
    interrupted = {s for s, _ in path.interrupted} if path else set()
    for state in spec.states:
        attrs = ""
        if state.name == failed:
            attrs = ', fillcolor="#ffebee", color="#c62828"'
        elif state.name in interrupted:
            attrs = ', fillcolor="#fff3e0", color="#ef6c00", style="rounded,filled,dashed"'
        out.append(f"  {_q(state.name)} [label={_q(state.name)}{attrs}];")
    for name in _terminals(table):
        ok = name == SUCCEEDED
        colour = "#e8f5e9" if ok else "#ffebee"
        text = "succeeded" if ok else name.replace(":", ": ")
        out.append(f'  {_q(name)} [label={_q(text)}, shape=doubleoctagon, fillcolor="{colour}"];')
    out.append(f"  {START} -> {_q(spec.initial)};")
    for edge in edges(table):
        taken = [t for t in path.traversals if t.edge == edge] if path else []
        if taken:
            colour = COLOURS[taken[-1].outcome]
            label = "\\n".join(_traversal_text(t) for t in taken)
            attrs = f'label={_q(label)}, color="{colour}", fontcolor="{colour}", penwidth=2.5'
        elif path is not None:
            attrs = f'label={_q(edge.label())}, color="{FADED}", fontcolor="{FADED}"'
        else:
            attrs = f"label={_q(edge.label())}"
        out.append(f"  {_q(edge.src)} -> {_q(edge.dest)} [{attrs}];")
    if path is not None and path.status is None and path.last_state:
        out.append(
            '  stopped [shape=note, label="interrupted:\\nresume with orchestrator '
            'recover", fillcolor="#fff3e0", color="#ef6c00"];'
        )
        out.append(f"  {_q(path.last_state)} -> stopped [style=dashed, arrowhead=none];")
    out.append("}")
    return "\n".join(out) + "\n"


SOURCE_MARK = "orchestrator-diagram-source sha256:"


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def svg(dot_source: str) -> str:
    """SVG of a Graphviz source via ``dot`` (or pygraphviz), stamped with the source's hash.

    The stamp lets a freshness check compare definitions rather than renderer output, which
    differs between Graphviz versions.
    """
    rendered = _render_svg(dot_source)
    stamp = f"<!-- {SOURCE_MARK}{source_hash(dot_source)} -->\n"
    head, sep, rest = rendered.partition("?>\n")
    return head + sep + stamp + rest if sep else stamp + rendered


def svg_source_hash(svg_text: str) -> str | None:
    start = svg_text.find(SOURCE_MARK)
    if start < 0:
        return None
    return svg_text[start + len(SOURCE_MARK) :].split(" ", 1)[0].strip()


def _render_svg(dot_source: str) -> str:
    exe = shutil.which("dot")
    if exe is not None:
        done = subprocess.run(
            [exe, "-Tsvg"], input=dot_source, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise UsageError(f"graphviz 'dot' failed: {done.stderr.strip()}")
        return done.stdout
    try:
        import pygraphviz  # type: ignore[import-not-found]
    except ImportError:
        raise UsageError(
            "drawing SVG needs Graphviz: install it with 'apt-get install graphviz' "
            "(or 'pip install pygraphviz'), or use --format mermaid or dot"
        ) from None
    graph = pygraphviz.AGraph(string=dot_source)
    return str(graph.draw(format="svg", prog="dot").decode())


def render(spec: WorkflowSpec, fmt: str, path: RunPath | None = None) -> str:
    if fmt == "mermaid":
        return mermaid(spec, path)
    if fmt == "dot":
        return dot(spec, path)
    if fmt == "svg":
        return svg(dot(spec, path))
    raise UsageError(f"unknown format {fmt!r}; use mermaid, dot or svg")
