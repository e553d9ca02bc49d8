"""``orchestrator diagram``: definitions and single runs drawn from the decision table.

orchestrator diagram WORKFLOW [--format mermaid|dot|svg] [-o FILE]
orchestrator diagram [WORKFLOW] --run RUN_ID [--state-dir DIR] [--format ...] [-o FILE]
orchestrator diagram --update [--dir diagrams]   # (re)write every committed diagram
orchestrator diagram --check  [--dir diagrams]   # exit 1 if any is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._diagrams import dot, mermaid, render, run_path, source_hash, svg, svg_source_hash
from ._fs import atomic_write, ensure_dir
from ._journal.history import RunHistory
from ._machine import DecisionTable
from ._registry import Command, diagram_examples, load_plugins
from ._spec import WorkflowSpec
from .errors import UnknownWorkflow, UsageError

__all__ = ("diagram_commands", "expected_diagrams")

DEFAULT_DIR = Path("diagrams")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", nargs="?", help="the workflow (see 'orchestrator workflows')")
    p.add_argument(
        "--format",
        choices=["mermaid", "dot", "svg"],
        default="mermaid",
        help="output format (default: mermaid; svg needs Graphviz)",
    )
    p.add_argument("--run", metavar="RUN_ID", help="draw the path this run took")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("state"),
        metavar="DIR",
        help="where the run's journal is (with --run; default: ./state)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here, not stdout")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a diagram under --dir is stale (regenerate: make diagrams)",
    )
    p.add_argument("--update", action="store_true", help="rewrite every diagram under --dir")
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help="the committed diagrams (default: ./diagrams)",
    )


def diagram_commands() -> list[Command]:
    return [
        Command(
            "diagram",
            "draw a workflow, or the path one run took",
            _configure,
            _cmd_diagram,
            description="Draw a workflow's state machine (Mermaid, Graphviz dot or SVG) from "
            "the same transitions machine the runner decides with, or with --run the path one "
            "run took, read from its journal: taken edges numbered and coloured by outcome, "
            "untaken edges faded, the failing step red, an interrupted run's stop marked. "
            "--check / --update keep the committed diagrams/ in step with the workflows.",
        )
    ]


def _specs() -> dict[str, WorkflowSpec]:
    return {spec.name: spec for plugin in load_plugins() for spec in plugin.specs()}


async def _cmd_diagram(args: argparse.Namespace) -> int:
    if args.check or args.update:
        return await _sync_dir(args.dir, update=args.update)
    specs = _specs()
    if args.run:
        history = await _history(args.state_dir, args.run)
        name = args.workflow or history.started.workflow
        spec = _spec(specs, name)
        if history.started.workflow != spec.name:
            raise UsageError(f"run {args.run} is a {history.started.workflow} run, not {name}")
        text = render(spec, args.format, run_path(history, DecisionTable(spec)))
    elif args.workflow:
        text = render(_spec(specs, args.workflow), args.format)
    else:
        raise UsageError("name a WORKFLOW, or use --run, --check or --update")
    if args.output:
        atomic_write(args.output, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def _spec(specs: dict[str, WorkflowSpec], name: str) -> WorkflowSpec:
    if name not in specs:
        raise UnknownWorkflow(name, specs)
    return specs[name]


async def _history(state_dir: Path, run_id: str) -> RunHistory:
    from ._journal.file import FileJournal
    from .cli import journal_dir

    journal = await FileJournal.open(journal_dir(state_dir), repair=False)
    history = journal.history(run_id)
    if history is None:
        raise UsageError(f"no run {run_id!r} in the journal of {state_dir}")
    return history


async def expected_diagrams() -> dict[str, tuple[str, str]]:
    """File stem -> (Mermaid text, dot source) for every workflow and example run."""
    expected: dict[str, tuple[str, str]] = {}
    for plugin in load_plugins():
        specs = {s.name: s for s in plugin.specs()}
        for spec in specs.values():
            expected[spec.name] = (mermaid(spec), dot(spec))
        for example in diagram_examples(plugin):
            spec = specs[example.workflow]
            path = run_path(await example.make(), DecisionTable(spec))
            expected[example.name] = (mermaid(spec, path), dot(spec, path))
    return expected


README_BLOCK = "<!-- diagram: {name} (make diagrams writes this block) -->"


def _readme_blocks(readme: Path, expected: dict[str, tuple[str, str]], *, update: bool) -> bool:
    """Refresh (or check) the Mermaid blocks a README embeds; True if they are current."""
    if not readme.exists():
        return True
    text = original = readme.read_text()
    for stem, (mmd, _) in expected.items():
        marker = README_BLOCK.format(name=stem)
        start = text.find(marker)
        if start < 0:
            continue
        begin = text.index("```mermaid\n", start) + len("```mermaid\n")
        end = text.index("```", begin)
        text = text[:begin] + mmd + text[end:]
    if update and text != original:
        atomic_write(readme, text.encode())
        print(f"wrote the diagrams in {readme}")
    return update or text == original


async def _sync_dir(directory: Path, *, update: bool) -> int:
    stale = []
    expected = await expected_diagrams()
    readme = directory.parent / "README.md"
    if not _readme_blocks(readme, expected, update=update):
        stale.append(str(readme))
    for stem, (mmd, dot_source) in expected.items():
        mmd_path, svg_path = directory / f"{stem}.mmd", directory / f"{stem}.svg"
        if update:
            ensure_dir(directory)
            atomic_write(mmd_path, mmd.encode())
            atomic_write(svg_path, svg(dot_source).encode())
            print(f"wrote {mmd_path} and {svg_path}")
            continue
        if not mmd_path.exists() or mmd_path.read_text() != mmd:
            stale.append(str(mmd_path))
        if not svg_path.exists() or svg_source_hash(svg_path.read_text()) != source_hash(
            dot_source
        ):
            stale.append(str(svg_path))
    if stale:
        print(
            f"stale diagrams: {', '.join(stale)}; regenerate them with 'make diagrams'",
            file=sys.stderr,
        )
        return 1
    return 0
