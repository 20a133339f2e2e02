"""duro.config: reading wrangler files and [tool.duro] from real files, and every error a user can
make, asserting that the message names the file, the key and the problem."""

from __future__ import annotations

import dataclasses
import pathlib
import textwrap

import pytest

from duro.config import Binding, Limits, apply_overrides, find_config_file, load_project
from duro.errors import ConfigError


def write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def load_error(root: pathlib.Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return info.value


ENTRY = {"src/entry.py": "# entry\n"}

CLOUDFLARE_JSONC = """
    // wrangler.jsonc as Cloudflare's templates write it
    {
      "$schema": "node_modules/wrangler/config-schema.json",
      "name": "counter-app", /* the worker name */
      "main": "src/entry.py",
      "compatibility_date": "2026-03-01",
      "compatibility_flags": ["python_workers",],
      "observability": { "enabled": true },
      "vars": {
        "HOMEPAGE": "https://example.com/a//b", // a URL: the // inside must survive
        "NOTE": "not /* a comment */ either",
        "QUOTE": "say \\"hi\\" // still a string",
      },
      "durable_objects": {
        "bindings": [
          { "name": "COUNTER", "class_name": "Counter" },
          { "name": "ROOMS", "class_name": "ChatRoom", }, // trailing comma
          { "name": "LEGACY", "class_name": "OldStore" },
        ],
      },
      "migrations": [
        { "tag": "v1", "new_sqlite_classes": ["Counter", "Room"] },
        { "tag": "v2", "new_classes": ["OldStore"] },
        /* rename Room -> ChatRoom, drop a class */
        { "tag": "v3", "renamed_classes": [{ "from": "Room", "to": "ChatRoom" }], "new_sqlite_classes": ["Tmp"] },
        { "tag": "v4", "deleted_classes": ["Tmp"] },
      ],
      "limits": { "cpu_ms": 300000 },
    }
"""


# --- wrangler.jsonc ---------------------------------------------------------------------------------


def test_cloudflare_shaped_wrangler_jsonc(tmp_path):
    write(tmp_path, {"wrangler.jsonc": CLOUDFLARE_JSONC, **ENTRY})
    cfg = load_project(tmp_path)
    root = tmp_path.resolve()
    assert cfg.root == root
    assert cfg.source == root / "wrangler.jsonc"
    assert cfg.name == "counter-app"
    assert cfg.main == root / "src" / "entry.py"
    assert cfg.entrypoint == "Default"
    assert cfg.bindings == (
        Binding("COUNTER", "Counter"),
        Binding("ROOMS", "ChatRoom"),
        Binding("LEGACY", "OldStore"),
    )
    assert cfg.sqlite_classes == {"Counter", "ChatRoom"}  # renamed; Tmp deleted
    assert cfg.kv_classes == {"OldStore"}
    assert cfg.vars == {
        "HOMEPAGE": "https://example.com/a//b",
        "NOTE": "not /* a comment */ either",
        "QUOTE": 'say "hi" // still a string',
    }
    assert cfg.limits.cpu_ms == 300000
    assert cfg.limits.idle_timeout == 70.0
    assert cfg.durability == "fsync"
    assert cfg.data_dir is None
    assert cfg.unique_key("Counter") == "counter-app-Counter"


def test_jsonc_duro_section(tmp_path):
    write(tmp_path, {**ENTRY, "wrangler.json": """
        {"name": "a", "main": "src/entry.py", "limits": {"cpu_ms": 1000},
         "duro": {"durability": "os", "data_dir": "state", "entrypoint": "Front",
                  "limits": {"idle_timeout": 5, "cpu_ms": 2000}}}
    """})
    cfg = load_project(tmp_path)
    assert cfg.durability == "os"
    assert cfg.data_dir == tmp_path.resolve() / "state"
    assert cfg.entrypoint == "Front"
    assert cfg.limits == Limits(idle_timeout=5.0, cpu_ms=2000)  # duro.limits wins over limits.cpu_ms
    assert isinstance(cfg.limits.idle_timeout, float)


def test_unmigrated_bound_class_is_accepted_as_sqlite(tmp_path):
    write(tmp_path, {**ENTRY, "wrangler.jsonc": """
        {"main": "src/entry.py", "durable_objects": {"bindings": [{"name": "A", "class_name": "A"}]}}
    """})
    cfg = load_project(tmp_path)
    assert cfg.sqlite_classes == {"A"}
    assert cfg.kv_classes == frozenset()
    assert cfg.name == tmp_path.name  # no "name": the directory name


def test_vars_and_config_are_read_only(tmp_path):
    write(tmp_path, {"wrangler.jsonc": CLOUDFLARE_JSONC, **ENTRY})
    cfg = load_project(tmp_path)
    with pytest.raises(TypeError):
        cfg.vars["X"] = "y"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    assert hash(cfg) == hash(load_project(tmp_path))


def test_jsonc_tricky_strings_and_comments(tmp_path):
    write(tmp_path, {**ENTRY, "wrangler.jsonc": r"""
        {"main": "src/entry.py", /**/ "vars": {
          "BACKSLASH": "C:\\", // the string ends at the second quote; this is a comment
          "STAR": "/* not a comment */", /* it's "quoted" in a comment, with a , */
          "SLASHES": "//", "LIST": [1, 2, /* , */ ],
        }}
    """})
    assert load_project(tmp_path).vars == {
        "BACKSLASH": "C:\\", "STAR": "/* not a comment */", "SLASHES": "//", "LIST": [1, 2],
    }


def test_jsonc_syntax_error_has_line_and_column(tmp_path):
    write(tmp_path, {**ENTRY, "wrangler.jsonc": """
        {
          // a comment keeps positions
          "name": "x" /* block */ "main": "src/entry.py"
        }
    """})
    e = load_error(tmp_path)
    assert str(e).startswith("wrangler.jsonc: line 3, column 27: invalid JSON: Expecting ',' delimiter")
    assert e.file == "wrangler.jsonc"


def test_jsonc_unterminated_block_comment(tmp_path):
    write(tmp_path, {"wrangler.jsonc": '{\n  "a": 1 /* never closed\n}\n'})
    assert str(load_error(tmp_path)) == "wrangler.jsonc: line 2, column 10: unterminated /* comment"


# --- wrangler.toml ----------------------------------------------------------------------------------


def test_wrangler_toml(tmp_path):
    write(tmp_path, {**ENTRY, "wrangler.toml": """
        name = "chat"
        main = "src/entry.py"
        compatibility_date = "2026-03-01"
        compatibility_flags = ["python_workers"]

        [vars]
        GREETING = "hi"

        [[durable_objects.bindings]]
        name = "ROOM"
        class_name = "Room"

        [[durable_objects.bindings]]
        name = "SELF_REF"
        class_name = "Room"
        script_name = "chat"   # this project itself: fine

        [[migrations]]
        tag = "v1"
        new_sqlite_classes = ["Room"]

        [[migrations]]
        tag = "v2"
        new_classes = ["Kv"]

        [[migrations]]
        tag = "v3"
        deleted_classes = ["Kv"]

        [limits]
        cpu_ms = 50000

        [duro]
        durability = "os"
    """})
    cfg = load_project(tmp_path)
    assert cfg.name == "chat"
    assert cfg.bindings == (Binding("ROOM", "Room"), Binding("SELF_REF", "Room"))
    assert cfg.sqlite_classes == {"Room"}
    assert cfg.kv_classes == frozenset()
    assert cfg.vars == {"GREETING": "hi"}
    assert cfg.limits.cpu_ms == 50000
    assert cfg.durability == "os"


# --- pyproject.toml [tool.duro] ---------------------------------------------------------------------


PYPROJECT = """
    [project]
    name = "myapp"

    [tool.duro]
    main = "app.py"
    durability = "os"
    data_dir = ".duro"

    [tool.duro.bindings]
    COUNTER = "Counter"
    ROOMS = "Room"

    [tool.duro.vars]
    GREETING = "hi"
    RETRIES = 3

    [tool.duro.limits]
    idle_timeout = 30
    hibernation_timeout = 2.5
    max_open_databases = 10
    max_queued_events = 5
    cpu_ms = 1000
    max_request_body = 1024
"""


def test_tool_duro(tmp_path):
    write(tmp_path, {"pyproject.toml": PYPROJECT, "app.py": ""})
    cfg = load_project(tmp_path)
    root = tmp_path.resolve()
    assert cfg.source == root / "pyproject.toml"
    assert cfg.name == "myapp"  # from [project].name
    assert cfg.main == root / "app.py"
    assert cfg.entrypoint == "Default"
    assert cfg.bindings == (Binding("COUNTER", "Counter"), Binding("ROOMS", "Room"))
    assert cfg.sqlite_classes == {"Counter", "Room"}
    assert cfg.kv_classes == frozenset()
    assert cfg.vars == {"GREETING": "hi", "RETRIES": 3}
    assert cfg.durability == "os"
    assert cfg.data_dir == root / ".duro"
    assert cfg.limits == Limits(30.0, 2.5, 10, 5, 1000, 1024)


def test_history_retention(tmp_path):
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "app.py"\n', "app.py": ""})
    assert load_project(tmp_path).history_retention == 30.0
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "app.py"\nhistory_retention = 0\n'})
    assert load_project(tmp_path).history_retention == 0.0  # history off
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "app.py"\nhistory_retention = 7.5\n'})
    assert load_project(tmp_path).history_retention == 7.5
    write(tmp_path, {"wrangler.jsonc": '{"main": "app.py", "duro": {"history_retention": 2}}'})
    assert load_project(tmp_path).history_retention == 2.0


def test_tool_duro_minimal_and_name_defaults(tmp_path):
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "app.py"\nentrypoint = "Front"\n', "app.py": ""})
    cfg = load_project(tmp_path)
    assert cfg.name == tmp_path.name
    assert cfg.entrypoint == "Front"
    assert cfg.bindings == ()
    assert cfg.limits == Limits()
    assert cfg.durability == "fsync"
    write(tmp_path, {"pyproject.toml": '[project]\nname = "p"\n[tool.duro]\nmain = "app.py"\nname = "explicit"\n'})
    assert load_project(tmp_path).name == "explicit"


def test_tool_duro_migrations(tmp_path):
    write(tmp_path, {"app.py": "", "pyproject.toml": """
        [tool.duro]
        main = "app.py"
        bindings = { STORE = "Store", NEW = "Renamed" }
        [[tool.duro.migrations]]
        tag = "v1"
        new_classes = ["Store", "Old"]
        [[tool.duro.migrations]]
        tag = "v2"
        renamed_classes = [{ from = "Old", to = "Renamed" }]
    """})
    cfg = load_project(tmp_path)
    assert cfg.kv_classes == {"Store", "Renamed"}
    assert cfg.sqlite_classes == frozenset()
    assert [(m.tag, m.renamed, m.deleted, m.transferred, m.moves_data) for m in cfg.migrations] == [
        ("v1", (), (), (), False), ("v2", (("Old", "Renamed"),), (), (), True)]
    assert cfg.migrations[1].key == "tool.duro.migrations[1]"


def test_transferred_classes_are_kept_in_order(tmp_path):
    write(tmp_path, {"app.py": "", "pyproject.toml": """
        [tool.duro]
        main = "app.py"
        bindings = { ROOMS = "Room" }
        [[tool.duro.migrations]]
        tag = "t1"
        transferred_classes = [{ from = "Room", from_script = "old-app", to = "Room" }]
    """})
    cfg = load_project(tmp_path)
    assert cfg.migrations[0].transferred == (("Room", "old-app", "Room"),)
    assert "Room" in cfg.sqlite_classes


# --- precedence and lookup --------------------------------------------------------------------------


def test_precedence(tmp_path):
    write(tmp_path, {"app.py": "", **ENTRY,
                     "pyproject.toml": '[tool.duro]\nmain = "app.py"\n',
                     "wrangler.toml": 'name = "toml"\nmain = "src/entry.py"\n'})
    assert find_config_file(tmp_path) == tmp_path / "wrangler.toml"
    write(tmp_path, {"wrangler.json": '{"name": "json", "main": "src/entry.py"}'})
    assert load_project(tmp_path).name == "json"
    write(tmp_path, {"wrangler.jsonc": '{"name": "jsonc", "main": "src/entry.py"}'})
    assert load_project(tmp_path).name == "jsonc"
    for name in ("wrangler.jsonc", "wrangler.json", "wrangler.toml"):
        (tmp_path / name).unlink()
    assert load_project(tmp_path).source == tmp_path.resolve() / "pyproject.toml"


def test_pyproject_without_tool_duro_is_not_a_config(tmp_path):
    write(tmp_path, {"pyproject.toml": '[project]\nname = "x"\n', "main.py": ""})
    assert find_config_file(tmp_path) is None
    msg = str(load_error(tmp_path))
    assert "wrangler.jsonc, wrangler.json, wrangler.toml" in msg
    assert "pyproject.toml exists but has no [tool.duro]" in msg
    assert '[tool.duro]\n    main = "main.py"' in msg  # the example names the entry file it found


def test_no_config_at_all(tmp_path):
    e = load_error(tmp_path)
    assert str(e).startswith(f"no duro configuration in {tmp_path.resolve()}")
    assert 'main = "app.py"' in str(e)
    assert 'COUNTER = "Counter"' in str(e)


def test_missing_project_directory(tmp_path):
    assert "does not exist" in str(load_error(tmp_path / "nope"))


# --- errors -----------------------------------------------------------------------------------------


def tool_duro_error(tmp_path, body: str, *, extra: str = "") -> str:
    write(tmp_path, {"app.py": "", "pyproject.toml": f'{extra}[tool.duro]\nmain = "app.py"\n{textwrap.dedent(body)}'})
    e = load_error(tmp_path)
    assert e.file == "pyproject.toml"
    return str(e)


@pytest.mark.parametrize(("body", "expected"), [
    ('durability = "fast"', 'pyproject.toml: tool.duro.durability: must be "fsync" or "os", not "fast"'),
    ("durability = 1", 'pyproject.toml: tool.duro.durability: must be "fsync" or "os", not 1'),
    ("history_retention = -1",
     "pyproject.toml: tool.duro.history_retention: must be a number of days >= 0 (0 turns history off), not -1"),
    ('history_retention = "30d"',
     'pyproject.toml: tool.duro.history_retention: must be a number of days >= 0 (0 turns history off), not "30d"'),
    ('entrypoint = "my-entry"', 'pyproject.toml: tool.duro.entrypoint: "my-entry" is not a valid Python identifier'),
    ("data_dir = 3", "pyproject.toml: tool.duro.data_dir: must be a non-empty string, not 3"),
    ('bindings = "COUNTER"', 'pyproject.toml: tool.duro.bindings: must be a table/object, not "COUNTER"'),
    ('vars = ["a"]', "pyproject.toml: tool.duro.vars: must be a table/object, not an array [...]"),
    ('name = "a/b"', 'pyproject.toml: tool.duro.name: "a/b" cannot be used as a project name'),
    ('[tool.duro.bindings]\n"my-counter" = "Counter"',
     'pyproject.toml: tool.duro.bindings.my-counter: "my-counter" is not a valid Python identifier'),
    ('[tool.duro.bindings]\nCOUNTER = "class"',
     'pyproject.toml: tool.duro.bindings.COUNTER: "class" is not a valid Python identifier'),
    ("[tool.duro.bindings]\nCOUNTER = 1", "pyproject.toml: tool.duro.bindings.COUNTER: must be a non-empty string, not 1"),
    ('[tool.duro.bindings]\nGREETING = "G"\n[tool.duro.vars]\nGREETING = "hi"',
     "pyproject.toml: tool.duro.vars.GREETING: GREETING is both a var and a Durable Object binding"),
    ("[tool.duro.limits]\nidle_timeout = -1", "pyproject.toml: tool.duro.limits.idle_timeout: must be >= 0 seconds, not -1"),
    ("[tool.duro.limits]\nidle_timeout = nan", "pyproject.toml: tool.duro.limits.idle_timeout: must be a number of seconds, not nan"),
    ('[tool.duro.limits]\nidle_timeout = "70s"',
     'pyproject.toml: tool.duro.limits.idle_timeout: must be a number of seconds, not "70s"'),
    ("[tool.duro.limits]\nmax_open_databases = 0",
     "pyproject.toml: tool.duro.limits.max_open_databases: must be a positive whole number (>= 1), not 0"),
    ("[tool.duro.limits]\nmax_queued_events = -5",
     "pyproject.toml: tool.duro.limits.max_queued_events: must be a positive whole number (>= 1), not -5"),
    ("[tool.duro.limits]\ncpu_ms = 1.5", "pyproject.toml: tool.duro.limits.cpu_ms: must be a whole number, not 1.5"),
    ("[tool.duro.limits]\ncpu_ms = true", "pyproject.toml: tool.duro.limits.cpu_ms: must be a whole number, not true"),
    ("[tool.duro.limits]\ncpu_ms = 0", "pyproject.toml: tool.duro.limits.cpu_ms: must be a positive whole number (>= 1), not 0"),
    ("[tool.duro.limits]\ncpu_ms = -100",
     "pyproject.toml: tool.duro.limits.cpu_ms: must be a positive whole number (>= 1), not -100"),
    ("[tool.duro.limits]\ncpu_ms = 300001",
     "pyproject.toml: tool.duro.limits.cpu_ms: must be at most 300000 (Cloudflare's maximum, 5 minutes of CPU per event), "
     "not 300001"),
    ('[[tool.duro.migrations]]\ntag = "v1"\n[[tool.duro.migrations]]\ntag = "v1"',
     'pyproject.toml: tool.duro.migrations[1].tag: duplicate tag "v1" (also tool.duro.migrations[0])'),
    ('bindings = { A = "A" }\n[[tool.duro.migrations]]\nnew_sqlite_classes = ["A"]\n'
     '[[tool.duro.migrations]]\ndeleted_classes = ["A"]',
     "pyproject.toml: tool.duro.bindings.A: Cannot apply --delete-class migration to class A without also "
     "removing the binding that references it"),
    ('[[tool.duro.migrations]]\nnew_sqlite_classes = ["A"]\n[[tool.duro.migrations]]\nnew_classes = ["A"]',
     "pyproject.toml: tool.duro.migrations[1].new_classes: class A already exists"),
    ('[[tool.duro.migrations]]\nnew_sqlite_classes = "A"',
     'pyproject.toml: tool.duro.migrations[0].new_sqlite_classes: must be an array, not "A"'),
    ('[[tool.duro.migrations]]\nrenamed_classes = [{ from = "A", to = "A" }]',
     "pyproject.toml: tool.duro.migrations[0].renamed_classes[0]: renames class A to itself"),
    ('[[tool.duro.migrations]]\nnew_sqlite_classes = ["A", "B"]\n[[tool.duro.migrations]]\n'
     'renamed_classes = [{ from = "A", to = "B" }]',
     "pyproject.toml: tool.duro.migrations[1].renamed_classes[0].to: class B already exists"),
    ('[[tool.duro.migrations]]\nrenamed_classes = [{ from = "A", to = "C" }, { from = "B", to = "C" }]',
     "pyproject.toml: tool.duro.migrations[0].renamed_classes[1].to: class C is the target of two moves"),
    ('[[tool.duro.migrations]]\nrenamed_classes = [{ from = "A", to = "C" }, { from = "A", to = "D" }]',
     "pyproject.toml: tool.duro.migrations[0].renamed_classes[1].from: class A is renamed twice"),
    ('[[tool.duro.migrations]]\ntransferred_classes = [{ from = "A", to = "B" }]',
     "pyproject.toml: tool.duro.migrations[0].transferred_classes[0].from_script: missing"),
])
def test_tool_duro_value_errors(tmp_path, body, expected):
    assert tool_duro_error(tmp_path, body).startswith(expected)


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    msg = tool_duro_error(tmp_path, 'durabilty = "os"')
    assert msg.startswith("pyproject.toml: tool.duro.durabilty: unknown key; did you mean durability? valid keys: main,")
    msg = tool_duro_error(tmp_path, "[tool.duro.limits]\nidle_timout = 5")
    assert msg.startswith("pyproject.toml: tool.duro.limits.idle_timout: unknown key; did you mean idle_timeout?")
    assert "max_open_databases" in msg
    msg = tool_duro_error(tmp_path, "zzz = 1")
    assert msg.startswith("pyproject.toml: tool.duro.zzz: unknown key; valid keys: main, entrypoint")


def test_project_name_from_pyproject_is_validated(tmp_path):
    msg = tool_duro_error(tmp_path, "", extra='[project]\nname = "../x"\n')
    assert msg.startswith('pyproject.toml: project.name: "../x" cannot be used as a project name')


def test_main_missing_or_not_found(tmp_path):
    write(tmp_path, {"pyproject.toml": "[tool.duro]\n", "src/entry.py": ""})
    msg = str(load_error(tmp_path))
    assert msg.startswith("pyproject.toml: tool.duro.main: missing;")
    assert 'main = "src/entry.py"' in msg
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "srv/app.py"\n'})
    assert str(load_error(tmp_path)) == (
        f"pyproject.toml: tool.duro.main: entry file {tmp_path.resolve() / 'srv' / 'app.py'} does not exist")
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "src/index.ts"\n'})
    assert str(load_error(tmp_path)).startswith(
        'pyproject.toml: tool.duro.main: "src/index.ts" is not a Python file')


def test_toml_syntax_error(tmp_path):
    write(tmp_path, {"pyproject.toml": '[tool.duro]\nmain = "app.py\n'})
    msg = str(load_error(tmp_path))
    assert msg.startswith("pyproject.toml: invalid TOML: ")
    assert "line 2" in msg
    write(tmp_path, {"wrangler.toml": "name = \n"})
    assert str(load_error(tmp_path)).startswith("wrangler.toml: invalid TOML: ")


def wrangler_error(tmp_path, text: str) -> str:
    write(tmp_path, {**ENTRY, "wrangler.jsonc": text})
    e = load_error(tmp_path)
    assert e.file == "wrangler.jsonc"
    return str(e)


BIND = '{"main": "src/entry.py", "durable_objects": {"bindings": [%s]}}'


@pytest.mark.parametrize(("text", "expected"), [
    (BIND % '{"name": "A", "class_name": "A"}, {"name": "A", "class_name": "B"}',
     'wrangler.jsonc: durable_objects.bindings[1].name: duplicate binding name "A" (also durable_objects.bindings[0])'),
    (BIND % '{"name": "A", "class_name": "A", "script_name": "other-worker", "environment": "prod"}',
     'wrangler.jsonc: durable_objects.bindings[0].script_name: bindings to another project ("other-worker") '
     "are not supported yet"),
    (BIND % '{"name": "MY-DO", "class_name": "A"}',
     'wrangler.jsonc: durable_objects.bindings[0].name: "MY-DO" is not a valid Python identifier'),
    (BIND % '{"name": "A"}', "wrangler.jsonc: durable_objects.bindings[0].class_name: missing;"),
    (BIND % '"A"', 'wrangler.jsonc: durable_objects.bindings[0]: must be a table/object, not "A"'),
    ('{"main": "src/entry.py", "durable_objects": {"bindings": {}}}',
     "wrangler.jsonc: durable_objects.bindings: must be an array, not a table {...}"),
    ('{"name": "x"}', 'wrangler.jsonc: main: missing; set it to the Python entry file, e.g. "src/entry.py"'),
    ('{"main": "src/nope.py"}', "wrangler.jsonc: main: entry file "),
    ('{"main": "src/entry.py", "duro": {"durability": "fast"}}',
     'wrangler.jsonc: duro.durability: must be "fsync" or "os", not "fast"'),
    ('{"main": "src/entry.py", "duro": {"idle_timeout": 5}}', "wrangler.jsonc: duro.idle_timeout: unknown key;"),
    ('{"main": "src/entry.py", "duro": {"limits": {"idle": 5}}}', "wrangler.jsonc: duro.limits.idle: unknown key;"),
    ('{"main": "src/entry.py", "limits": {"cpu_ms": -1}}',
     "wrangler.jsonc: limits.cpu_ms: must be a positive whole number (>= 1), not -1"),
    ('{"main": "src/entry.py", "migrations": [{"renamed_classes": [{"from": "A"}]}]}',
     "wrangler.jsonc: migrations[0].renamed_classes[0].to: missing; must be a non-empty string"),
    ('["main"]', "wrangler.jsonc: the top level must be an object, not an array [...]"),
])
def test_wrangler_errors(tmp_path, text, expected):
    assert wrangler_error(tmp_path, text).startswith(expected)


# --- overrides ---------------------------------------------------------------------------------------


def test_apply_overrides(tmp_path):
    write(tmp_path, {"pyproject.toml": PYPROJECT, "app.py": ""})
    cfg = load_project(tmp_path)
    new = apply_overrides(cfg, durability="fsync", idle_timeout=1, max_open_databases=None, data_dir=tmp_path / "d")
    assert new.durability == "fsync"
    assert new.limits == dataclasses.replace(cfg.limits, idle_timeout=1.0)
    assert new.data_dir == tmp_path / "d"
    assert new.bindings == cfg.bindings
    assert apply_overrides(cfg, limits=Limits()).limits == Limits()
    assert apply_overrides(cfg) == cfg
    with pytest.raises(ConfigError, match=r'^durability: must be "fsync" or "os", not "fast"$'):
        apply_overrides(cfg, durability="fast")
    with pytest.raises(ConfigError, match=r"^idle_timeout: must be >= 0 seconds, not -2$"):
        apply_overrides(cfg, idle_timeout=-2)
    with pytest.raises(TypeError):
        apply_overrides(cfg, no_such_field=1)
