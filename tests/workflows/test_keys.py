"""Session keys (spec §3.3): canonical form, store keys, validation, and the config they read."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from orchestrator.errors import CorruptFile, UsageError
from workflows.sessions.config import (
    DEFAULT_MODEL,
    DEFAULT_PROVIDER,
    SessionsConfig,
    load_config,
)
from workflows.sessions.keys import (
    MAX_KEY_LENGTH,
    Target,
    canonical_key,
    check_key,
    is_subagent_key,
    main_session_key,
    normalize_agent_id,
    resolve_target,
    store_keys,
)

DEFAULT = SessionsConfig(agents=("main", "ops"))
#: A customised ``session.mainKey``: the legacy ``agent:<a>:main`` becomes an alias.
WORK = SessionsConfig(main_key="work", agents=("main", "ops"))
GLOBAL = SessionsConfig(scope="global", agents=("main", "ops"))
#: Another default agent: unprefixed keys belong to it.
OPS_DEFAULT = SessionsConfig(default_agent="ops", agents=("ops", "main"))

CONFIGS = {"default": DEFAULT, "work": WORK, "global": GLOBAL, "ops_default": OPS_DEFAULT}


# --- normalize_agent_id -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("main", "main"),
        ("Ops", "ops"),
        ("  ops  ", "ops"),
        ("ops_team-2", "ops_team-2"),
        ("", "main"),
        ("   ", "main"),
        ("My Agent!", "my-agent"),
        ("--x--", "x"),
        ("a b  c", "a-b-c"),
        ("!!!", "main"),
        ("a" * 64, "a" * 64),
        ("A" * 70, "a" * 64),
        ("-ops", "ops"),
    ],
)
def test_normalize_agent_id(raw: str, expected: str) -> None:
    assert normalize_agent_id(raw) == expected


# --- canonical_key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "raw", "expected"),
    [
        # specials
        ("default", "global", "global"),
        ("default", " GLOBAL ", "global"),
        ("default", "unknown", "unknown"),
        ("default", "Unknown", "unknown"),
        ("work", "global", "global"),
        # the main session and its aliases
        ("default", "main", "agent:main:main"),
        ("default", "  MAIN  ", "agent:main:main"),
        ("default", "agent:main:main", "agent:main:main"),
        ("default", "Agent:Main:MAIN", "agent:main:main"),
        ("default", "agent:ops:main", "agent:ops:main"),
        ("default", "agent:ops:MAIN", "agent:ops:main"),
        ("work", "main", "agent:main:work"),
        ("work", "work", "agent:main:work"),
        ("work", "WORK", "agent:main:work"),
        ("work", "agent:main:main", "agent:main:work"),
        ("work", "agent:main:work", "agent:main:work"),
        ("work", "agent:ops:main", "agent:ops:work"),
        ("work", "Agent:Ops:Main", "agent:ops:work"),
        ("work", "agent:ops:WORK", "agent:ops:work"),
        ("global", "main", "global"),
        ("global", "agent:main:main", "global"),
        ("global", "agent:ops:main", "global"),
        ("ops_default", "main", "agent:ops:main"),
        ("ops_default", "agent:main:main", "agent:main:main"),
        # unprefixed keys get the default agent's prefix
        ("default", "discord:group:Dev", "agent:main:discord:group:dev"),
        ("default", "  discord:group:dev  ", "agent:main:discord:group:dev"),
        ("default", "telegram:direct:12345", "agent:main:telegram:direct:12345"),
        ("default", "subagent:abc", "agent:main:subagent:abc"),
        ("work", "discord:group:dev", "agent:main:discord:group:dev"),
        ("global", "discord:group:dev", "agent:main:discord:group:dev"),
        ("ops_default", "discord:group:Dev", "agent:ops:discord:group:dev"),
        # prefixed keys are lowercased, nothing else
        ("default", "agent:ops:discord:group:Dev", "agent:ops:discord:group:dev"),
        ("default", "AGENT:OPS:Subagent:X", "agent:ops:subagent:x"),
        ("default", "agent:main:cron:job1:run:r2", "agent:main:cron:job1:run:r2"),
        ("work", "agent:ops:discord:group:dev", "agent:ops:discord:group:dev"),
        ("global", "agent:ops:discord:group:dev", "agent:ops:discord:group:dev"),
        # "main" as a later segment is not the main session
        ("default", "agent:main:main:thread:1", "agent:main:main:thread:1"),
        ("default", "discord:main", "agent:main:discord:main"),
    ],
)
def test_canonical_key(config: str, raw: str, expected: str) -> None:
    assert canonical_key(raw, CONFIGS[config]) == expected


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize(
    "raw", ["main", "Agent:Ops:Main", "discord:group:Dev", "global", "agent:main:work"]
)
def test_canonical_key_is_idempotent(config: str, raw: str) -> None:
    once = canonical_key(raw, CONFIGS[config])
    assert canonical_key(once, CONFIGS[config]) == once


@pytest.mark.parametrize(
    ("config", "agent", "expected"),
    [
        ("default", None, "agent:main:main"),
        ("default", "ops", "agent:ops:main"),
        ("default", "Ops", "agent:ops:main"),
        ("work", None, "agent:main:work"),
        ("work", "ops", "agent:ops:work"),
        ("global", None, "global"),
        ("global", "ops", "agent:ops:main"),
        ("ops_default", None, "agent:ops:main"),
    ],
)
def test_main_session_key(config: str, agent: str | None, expected: str) -> None:
    assert main_session_key(CONFIGS[config], agent) == expected


# --- store_keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "raw", "existing", "expected"),
    [
        # nothing stored yet: canonical, then the raw key as given
        ("default", "agent:main:main", [], ["agent:main:main"]),
        ("default", "main", [], ["agent:main:main", "main"]),
        (
            "default",
            "discord:group:Dev",
            [],
            ["agent:main:discord:group:dev", "discord:group:Dev"],
        ),
        # every stored key equal to canonical or raw ignoring case
        (
            "default",
            "agent:ops:main",
            ["agent:ops:MAIN", "Agent:Ops:Main", "agent:ops:main", "agent:ops:other"],
            ["agent:ops:main", "agent:ops:MAIN", "Agent:Ops:Main"],
        ),
        (
            "default",
            "discord:group:Dev",
            ["DISCORD:GROUP:DEV", "agent:main:discord:group:DEV", "agent:ops:discord:group:dev"],
            [
                "agent:main:discord:group:dev",
                "discord:group:Dev",
                "agent:main:discord:group:DEV",
                "DISCORD:GROUP:DEV",
            ],
        ),
        (
            "default",
            "main",
            ["MAIN", "Agent:Main:Main", "agent:main:main:thread:1"],
            ["agent:main:main", "main", "Agent:Main:Main", "MAIN"],
        ),
        # custom mainKey: the legacy agent:<a>:main (any case) belongs to the main session
        ("work", "main", [], ["agent:main:work", "main"]),
        (
            "work",
            "main",
            ["agent:main:main", "agent:ops:main", "WORK"],
            ["agent:main:work", "main", "agent:main:main"],
        ),
        (
            "work",
            "agent:ops:work",
            ["Agent:Ops:MAIN", "agent:main:main", "agent:ops:Work"],
            ["agent:ops:work", "agent:ops:Work", "Agent:Ops:MAIN"],
        ),
        (
            "work",
            "agent:ops:main",
            ["agent:ops:MAIN", "Agent:Ops:Work"],
            ["agent:ops:work", "agent:ops:main", "Agent:Ops:Work", "agent:ops:MAIN"],
        ),
        # not a main key: agent:<a>:main is no alias of it
        (
            "work",
            "discord:group:dev",
            ["agent:main:main"],
            ["agent:main:discord:group:dev", "discord:group:dev"],
        ),
    ],
)
def test_store_keys(config: str, raw: str, existing: list[str], expected: list[str]) -> None:
    cfg = CONFIGS[config]
    canonical = canonical_key(raw, cfg)
    agent = canonical.split(":")[1]
    got = store_keys(raw, canonical, agent, cfg, existing)
    assert got[0] == canonical, "the canonical key comes first"
    assert sorted(got) == sorted(expected), got
    assert len(got) == len(set(got)), f"duplicates in {got}"


@pytest.mark.parametrize(
    ("config", "raw", "existing", "expected"),
    [
        ("default", "global", [], ["global"]),
        ("default", "GLOBAL", [], ["global", "GLOBAL"]),
        ("global", "main", [], ["global", "main"]),
        # spec §3.3: every key in the store equal to canonical or raw ignoring case
        ("default", "global", ["Global", "GLOBAL", "other"], ["global", "Global", "GLOBAL"]),
        ("global", "main", ["MAIN", "Global"], ["global", "main", "MAIN", "Global"]),
        ("default", "unknown", ["UNKNOWN"], ["unknown", "UNKNOWN"]),
    ],
)
def test_store_keys_of_the_special_keys(
    config: str, raw: str, existing: list[str], expected: list[str]
) -> None:
    cfg = CONFIGS[config]
    canonical = canonical_key(raw, cfg)
    got = store_keys(raw, canonical, "main", cfg, existing)
    assert got[0] == canonical
    assert sorted(got) == sorted(expected), (
        f"store_keys({raw!r}) = {got}: every stored key equal to {canonical!r} or {raw!r} "
        "ignoring case is an alias of the session and must be pruned with it"
    )


# --- is_subagent_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("agent:main:subagent:123e4567-e89b-12d3-a456-426614174000", True),
        ("Agent:Ops:SubAgent:x", True),
        ("agent:main:subagent:a:subagent:b", True),
        ("subagent:x", True),
        ("  subagent:x", True),
        ("agent:main:main", False),
        ("agent:main:discord:subagent:x", False),
        ("agent:main:acp:x", False),
        ("main", False),
        ("global", False),
        ("agent:subagent", False),
        ("discord:group:subagent", False),
    ],
)
def test_is_subagent_key(key: str, expected: bool) -> None:
    assert is_subagent_key(key) is expected


# --- check_key / resolve_target -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("main", "main"),
        ("  agent:main:main\t", "agent:main:main"),
        (42, "42"),
        ("k" * MAX_KEY_LENGTH, "k" * MAX_KEY_LENGTH),
        ("  " + "k" * MAX_KEY_LENGTH + "  ", "k" * MAX_KEY_LENGTH),
        ("agent:main:discord:group:Δέλτα", "agent:main:discord:group:Δέλτα"),
    ],
)
def test_check_key_accepts(raw: object, expected: str) -> None:
    assert check_key(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\t\n", None, True, False, [], {}, b"main"])
def test_check_key_requires_a_key(raw: object) -> None:
    with pytest.raises(UsageError, match="key required"):
        check_key(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "a\x00b",
        "a\nb",
        "a\rb",
        "a\tb",
        "agent:main:\x1b[31m",
        "a\x7fb",
        "k" * (MAX_KEY_LENGTH + 1),
        "k" * 10_000,
    ],
)
def test_check_key_refuses_malformed_keys(raw: str) -> None:
    with pytest.raises(UsageError, match="is not a session key"):
        check_key(raw)


@pytest.mark.parametrize("raw", ["agent:x", "agent:", "AGENT:ops", "agent::main", "agent:ops:"])
def test_resolve_target_refuses_incomplete_agent_keys(raw: str) -> None:
    with pytest.raises(UsageError, match="incomplete"):
        resolve_target(raw, DEFAULT)


@pytest.mark.parametrize(
    ("config", "raw", "agent"),
    [
        ("default", "agent:ghost:main", "ghost"),
        ("default", "Agent:Ghost:discord:group:dev", "ghost"),
        ("ops_default", "agent:dev:main", "dev"),
    ],
)
def test_resolve_target_refuses_unknown_agents(config: str, raw: str, agent: str) -> None:
    with pytest.raises(UsageError, match=f"unknown agent '{agent}'"):
        resolve_target(raw, CONFIGS[config])


def test_resolve_target_refuses_unknown_default_agent() -> None:
    config = SessionsConfig(default_agent="ghost", agents=("main",))
    with pytest.raises(UsageError, match="unknown agent 'ghost'"):
        resolve_target("discord:group:dev", config)


@pytest.mark.parametrize("raw", ["", "a\x00b", "k" * (MAX_KEY_LENGTH + 1), None])
def test_resolve_target_validates_the_key_first(raw: object) -> None:
    with pytest.raises(UsageError, match="INVALID_REQUEST"):
        resolve_target(raw, DEFAULT)


@pytest.mark.parametrize(
    ("config", "raw", "existing", "expected"),
    [
        (
            "default",
            "  Main ",
            ["MAIN", "agent:main:main", "agent:ops:main"],
            Target("Main", "agent:main:main", "main", ("agent:main:main", "Main", "MAIN")),
        ),
        (
            "default",
            "agent:ops:discord:group:Dev",
            ["agent:ops:discord:group:dev"],
            Target(
                "agent:ops:discord:group:Dev",
                "agent:ops:discord:group:dev",
                "ops",
                ("agent:ops:discord:group:dev", "agent:ops:discord:group:Dev"),
            ),
        ),
        (
            "work",
            "agent:ops:main",
            ["agent:ops:MAIN"],
            Target(
                "agent:ops:main",
                "agent:ops:work",
                "ops",
                ("agent:ops:work", "agent:ops:main", "agent:ops:MAIN"),
            ),
        ),
        ("global", "main", [], Target("main", "global", "main", ("global", "main"))),
        ("ops_default", "global", [], Target("global", "global", "ops", ("global",))),
        ("default", "unknown", [], Target("unknown", "unknown", "main", ("unknown",))),
    ],
)
def test_resolve_target(config: str, raw: str, existing: list[str], expected: Target) -> None:
    got = resolve_target(raw, CONFIGS[config], existing)
    assert got.raw_key == expected.raw_key
    assert got.canonical == expected.canonical
    assert got.agent_id == expected.agent_id
    assert got.store_keys[0] == expected.store_keys[0]
    assert sorted(got.store_keys) == sorted(expected.store_keys)


# --- load_config --------------------------------------------------------------------------


def _write_config(state: Path, doc: object) -> None:
    (state / "openclaw.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def test_load_config_without_a_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == SessionsConfig()
    assert config.default_model("main") == (DEFAULT_PROVIDER, DEFAULT_MODEL)


def test_load_config_adds_agent_directories(tmp_path: Path) -> None:
    for name in ("ops", "zeta", "Bad Name", ".hidden", "-dash"):
        (tmp_path / "agents" / name).mkdir(parents=True)
    (tmp_path / "agents" / "notadir").write_text("x")
    assert load_config(tmp_path).agents == ("main", "ops", "zeta")
    _write_config(tmp_path, {"agents": {"list": [{"id": "alpha", "default": True}]}})
    config = load_config(tmp_path)
    assert config.default_agent == "alpha"
    assert config.agents == ("alpha", "ops", "zeta")


def test_load_config_ignores_an_agent_directory_with_a_newline(tmp_path: Path) -> None:
    (tmp_path / "agents" / "ops\n").mkdir(parents=True)
    assert load_config(tmp_path).agents == ("main",), "'ops\\n' is no valid agent id"


@pytest.mark.parametrize(
    ("session", "main_key", "scope"),
    [
        ({}, "main", "per-sender"),
        ({"mainKey": "work"}, "work", "per-sender"),
        ({"mainKey": "  Work "}, "work", "per-sender"),
        ({"mainKey": ""}, "main", "per-sender"),
        ({"mainKey": None}, "main", "per-sender"),
        ({"scope": "global"}, "main", "global"),
        ({"scope": "per-sender", "mainKey": "home"}, "home", "per-sender"),
        ({"scope": "bogus"}, "main", "per-sender"),
    ],
)
def test_load_config_session_section(
    tmp_path: Path, session: dict[str, object], main_key: str, scope: str
) -> None:
    _write_config(tmp_path, {"session": session})
    config = load_config(tmp_path)
    assert (config.main_key, config.scope) == (main_key, scope)


def test_load_config_agents_list(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        {
            "agents": {
                "defaults": {"model": {"primary": "openai/gpt-5.4", "fallbacks": ["x/y"]}},
                "list": [
                    {"id": "main"},
                    {"id": "Ops", "default": True, "model": "anthropic/claude-sonnet-4-6"},
                    {"id": "writer", "model": {"primary": "google/gemini-3-pro"}},
                    {"id": "bare", "model": "gpt-5-mini"},
                    {"name": "no id"},
                    "not an object",
                ],
            }
        },
    )
    config = load_config(tmp_path)
    assert config.default_agent == "ops"
    assert config.agents == ("main", "ops", "writer", "bare")
    assert config.default_model("ops") == ("anthropic", "claude-sonnet-4-6")
    assert config.default_model("writer") == ("google", "gemini-3-pro")
    assert config.default_model("bare") == (DEFAULT_PROVIDER, "gpt-5-mini")
    assert config.default_model("main") == ("openai", "gpt-5.4"), "agents.defaults.model"
    assert canonical_key("discord:group:dev", config) == "agent:ops:discord:group:dev"


def test_load_config_first_listed_agent_is_default_without_a_flag(tmp_path: Path) -> None:
    _write_config(tmp_path, {"agents": {"list": [{"id": "writer"}, {"id": "ops"}]}})
    config = load_config(tmp_path)
    assert config.default_agent == "writer"
    assert config.agents == ("writer", "ops")
    assert main_session_key(config) == "agent:writer:main"


def test_load_config_normalizes_a_padded_default_agent_id(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        {"agents": {"list": [{"id": " Ops ", "default": True, "model": "openai/gpt-5"}]}},
    )
    config = load_config(tmp_path)
    assert config.agents == ("ops",), config.agents
    assert config.default_agent == "ops", (
        f"default agent {config.default_agent!r}: ids are trimmed in agents but not in default"
    )
    assert config.default_model("ops") == ("openai", "gpt-5")


@pytest.mark.parametrize(
    "text",
    [
        '{\n  // JSON5 comment\n  "session": {"mainKey": "work"}\n}',
        "{session: {mainKey: 'work'}}",
        '{"session": {"mainKey": "work"},}',
        "",
        "{",
    ],
)
def test_load_config_refuses_json5_and_broken_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text(text)
    with pytest.raises(CorruptFile) as caught:
        load_config(tmp_path)
    assert caught.value.path == path
    assert path.read_text() == text, "the configuration must be left untouched"


@pytest.mark.parametrize("text", ["[]", "null", "42", '"main"'])
def test_load_config_refuses_a_non_object(tmp_path: Path, text: str) -> None:
    (tmp_path / "openclaw.json").write_text(text)
    with pytest.raises(CorruptFile, match="JSON object"):
        load_config(tmp_path)


def test_load_config_tolerates_odd_sections(tmp_path: Path) -> None:
    _write_config(tmp_path, {"session": "nope", "agents": [1, 2]})
    assert load_config(tmp_path) == SessionsConfig()
