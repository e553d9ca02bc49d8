"""Reset and delete through the command line: crash sweeps, concurrency, hostile state."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import EffectPlanned, FileJournal, RunFinished
from tests.campaigns.crash_state import (
    ROOT,
    SESSIONS,
    cli,
    files_of,
    fresh,
    leftovers,
    normalized,
    store_of,
)
from workflows.sessions.demo import seed_state


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("template") / "state"
    state.mkdir()
    seed_state(state)
    return state


def plans_of(state: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        journal = await FileJournal.open(state / "orchestrator" / "journal", repair=False)
        return [{"run": h.run_id, "records": h.records} for h in journal.runs()]

    return anyio.run(read)


def check_reset_converged(
    state: Path, original: Path, baseline: dict[str, Any], point: str
) -> None:
    assert normalized(store_of(state, masked=True), "agent:main:main") == baseline, point
    store = store_of(state)
    entry = store["agent:main:main"]
    new_id = entry["sessionId"]
    # One new session id, used consistently by the store, the header and the journal.
    header = orjson.loads(Path(entry["sessionFile"]).read_bytes().splitlines()[0])
    assert (header["type"], header["id"]) == ("session", new_id), point
    runs = plans_of(state)
    committed = [
        r.value["new_session_id"]
        for run in runs
        for r in run["records"]
        if isinstance(r, EffectPlanned) and r.name == "commit"
    ]
    assert committed == [new_id], point
    # The old transcript's bytes exist exactly once, under the planned archive name.
    old = store_of(original)["agent:main:main"]
    old_bytes = Path(old["sessionFile"]).read_bytes()
    holders = [name for name, data in files_of(state).items() if data == old_bytes]
    assert len(holders) == 1 and holders[0].startswith(f"{old['sessionId']}.jsonl.reset."), point
    assert not leftovers(state), (point, leftovers(state))
    farewells = (state / "bindings" / "farewells.jsonl").read_text().splitlines()
    assert len(farewells) == 1 and '"t-777"' in farewells[0], (point, farewells)


@pytest.mark.slow
def test_reset_crash_sweep_every_failpoint_then_recover(template: Path, tmp_path: Path) -> None:
    base = fresh(template, tmp_path / "base")
    trace = tmp_path / "trace"
    done = cli(base, "reset", "main", trace=trace)
    assert done.returncode == 0, done.stderr
    baseline = normalized(store_of(base, masked=True), "agent:main:main")
    points = trace.read_text().splitlines()
    assert {"plan.commit", "store.replaced", "archive.renamed", "header.linked"} <= set(points)
    arrivals: collections.Counter[str] = collections.Counter()
    for point in points:
        arrivals[point] += 1
        at = f"{point}#{arrivals[point]}"
        original = fresh(template, tmp_path / f"orig-{at}")
        state = fresh(template, tmp_path / at)
        crashed = cli(state, "reset", "main", crash_at=at)
        assert crashed.returncode == -9, (at, crashed.stdout, crashed.stderr)
        recovered = cli(state, "recover", "--json")
        assert recovered.returncode == 0, (at, recovered.stderr)
        if not any(isinstance(r, RunFinished) for run in plans_of(state) for r in run["records"]):
            # Killed before the run was journaled: nothing may have changed; ask again.
            assert files_of(state) == files_of(original), at
            assert cli(state, "reset", "main").returncode == 0
        check_reset_converged(state, original, baseline, at)
    print(
        f"\nreset crash sweep: {len(points)} kill points ({len(set(points))} distinct), "
        "each recovered to the uninterrupted result"
    )


@pytest.mark.slow
def test_delete_crash_sweep_every_failpoint_then_recover(template: Path, tmp_path: Path) -> None:
    key = "agent:main:telegram:direct:42"
    base = fresh(template, tmp_path / "base")
    trace = tmp_path / "trace"
    assert cli(base, "delete", key, trace=trace).returncode == 0
    baseline = store_of(base, masked=True)
    assert key not in baseline
    points = trace.read_text().splitlines()
    arrivals: collections.Counter[str] = collections.Counter()
    for point in points:
        arrivals[point] += 1
        at = f"{point}#{arrivals[point]}"
        original = fresh(template, tmp_path / f"orig-{at}")
        state = fresh(template, tmp_path / at)
        assert cli(state, "delete", key, crash_at=at).returncode == -9, at
        assert cli(state, "recover").returncode == 0, at
        if not any(isinstance(r, RunFinished) for run in plans_of(state) for r in run["records"]):
            assert files_of(state) == files_of(original), at
            assert cli(state, "delete", key).returncode == 0
        assert store_of(state, masked=True) == baseline, at
        old = store_of(original)[key]
        old_bytes = Path(old["sessionFile"]).read_bytes()
        holders = [n for n, data in files_of(state).items() if data == old_bytes]
        assert len(holders) == 1 and holders[0].startswith(f"{old['sessionId']}.jsonl.deleted."), at
        assert not leftovers(state), at
        farewells = (state / "bindings" / "farewells.jsonl").read_text().splitlines()
        assert len(farewells) == 1 and '"t-888"' in farewells[0], at
    print(f"\ndelete crash sweep: {len(points)} kill points ({len(set(points))} distinct)")


def test_two_processes_resetting_one_key_each_rotate_once(template: Path, tmp_path: Path) -> None:
    state = fresh(template, tmp_path / "state")
    original = store_of(state)["agent:main:main"]
    old_bytes = Path(original["sessionFile"]).read_bytes()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "reset",
                "main",
                "--json",
                "--state-dir",
                str(state),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    replies = [orjson.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(r["ok"] for r in replies), replies
    ids = {r["entry"]["sessionId"] for r in replies}
    assert len(ids) == 2 and original["sessionId"] not in ids
    assert store_of(state)["agent:main:main"]["sessionId"] in ids
    # Serialized: one reset started from the session the other made.
    plans = [
        r.value
        for run in plans_of(state)
        for r in run["records"]
        if isinstance(r, EffectPlanned) and r.name == "commit"
    ]
    olds = sorted(p["expected_old_id"] for p in plans)
    assert set(olds) < {original["sessionId"], *ids}
    assert original["sessionId"] in olds and len(set(olds)) == 2
    # No transcript lost: the original bytes once, the first new session's header archived.
    files = files_of(state)
    assert sum(data == old_bytes for data in files.values()) == 1
    assert len([n for n in files if ".jsonl.reset." in n]) == 2


def test_live_store_lock_waits_then_names_the_holder(template: Path, tmp_path: Path) -> None:
    state = fresh(template, tmp_path / "state")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = state / SESSIONS / "sessions.json.lock"
        lock.write_bytes(orjson.dumps({"pid": holder.pid, "createdAt": "2026-01-01T00:00:00Z"}))
        before = files_of(state)
        done = cli(state, "reset", "main", "--store-lock-wait", "0.5", "--json")
        reply = orjson.loads(done.stdout)
        assert done.returncode == 1
        assert reply["error"]["code"] == "UNAVAILABLE"
        assert f"pid {holder.pid}" in reply["error"]["message"]
        assert files_of(state) == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_store_lock_of_a_dead_process_is_reclaimed(template: Path, tmp_path: Path) -> None:
    state = fresh(template, tmp_path / "state")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = state / SESSIONS / "sessions.json.lock"
    lock.write_bytes(orjson.dumps({"pid": dead.pid, "createdAt": "2026-01-01T00:00:00Z"}))
    done = cli(state, "reset", "main", "--store-lock-wait", "0.5")
    assert done.returncode == 0, done.stderr
    assert not lock.exists()


@pytest.mark.parametrize("content", [b"", b"   \n", b"{oops", b"[]", b'{"a": 1'])
def test_corrupt_store_is_refused_and_left_alone(
    template: Path, tmp_path: Path, content: bytes
) -> None:
    state = fresh(template, tmp_path / "state")
    (state / SESSIONS / "sessions.json").write_bytes(content)
    before = files_of(state)
    for argv in (["reset", "main"], ["delete", "agent:main:telegram:direct:42"]):
        done = cli(state, *argv)
        assert done.returncode == 3, (argv, done.stderr)
        assert "sessions.json is unreadable" in done.stderr and done.stderr.count("\n") == 1
        assert files_of(state) == before


@pytest.mark.parametrize(
    "key",
    ["", "   ", "agent:../../etc:main", "agent:nope:main", "main\x00x", "a" * 600, "agent:main"],
)
def test_bad_keys_exit_2_and_change_nothing(template: Path, tmp_path: Path, key: str) -> None:
    state = fresh(template, tmp_path / "state")
    before = files_of(state)
    done = cli(state, "reset", key, "--json") if "\x00" not in key else None
    if done is None:  # a NUL cannot even be passed as an argument; use the Python API
        from workflows.sessions.service import open_session_service

        async def call() -> dict[str, Any]:
            async with open_session_service(state) as service:
                return await service.reset(key)

        reply = anyio.run(call)
    else:
        assert done.returncode == 2, done.stderr
        reply = orjson.loads(done.stdout)
    assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST"
    assert files_of(state) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sessionFile", "../../../../outside.jsonl"),
        ("sessionFile", "{outside}"),
        ("sessionId", "../../../outside"),
        ("sessionFile", "sub/../../../outside.jsonl"),
    ],
)
def test_traversal_in_store_data_never_touches_outside(
    template: Path, tmp_path: Path, field: str, value: str
) -> None:
    state = fresh(template, tmp_path / "state")
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b"not yours\n")
    store_path = state / SESSIONS / "sessions.json"
    store = store_of(state)
    store["agent:main:main"][field] = value.replace("{outside}", str(outside))
    store_path.write_bytes(orjson.dumps(store, option=orjson.OPT_INDENT_2))
    done = cli(state, "reset", "main", "--json")
    assert done.returncode == 0, done.stderr
    assert outside.read_bytes() == b"not yours\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.jsonl", "state"]
    entry = orjson.loads(done.stdout)["entry"]
    assert Path(entry["sessionFile"]).parent == (state / SESSIONS).absolute()


def test_symlinked_sessions_directory_is_refused(template: Path, tmp_path: Path) -> None:
    state = fresh(template, tmp_path / "state")
    real = tmp_path / "elsewhere"
    shutil.move(str(state / SESSIONS), real)
    (state / SESSIONS).symlink_to(real, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in real.iterdir()}
    done = cli(state, "reset", "main")
    assert done.returncode == 2, done.stderr
    assert "symlink" in done.stderr
    assert {p.name: p.read_bytes() for p in real.iterdir()} == before


def test_reset_prunes_a_mixed_case_legacy_alias(template: Path, tmp_path: Path) -> None:
    state = fresh(template, tmp_path / "state")
    old = store_of(state)["Discord:Group:Dev"]
    done = cli(state, "reset", "discord:group:dev", "--json")
    assert done.returncode == 0, done.stderr
    store = store_of(state)
    assert "Discord:Group:Dev" not in store
    entry = store["agent:main:discord:group:dev"]
    assert entry["groupActivation"] == old["groupActivation"]
    assert entry["sessionId"] != old["sessionId"]
