"""Migrations that move data, on the runtime: a project is run, its configuration is changed as a
user would (rename a class, delete one, transfer one from another script), and the next start
finds the objects where the new configuration says — same IDs, same data, alarms that still fire.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from duro.clock import VirtualClock
from duro.errors import ConfigError
from duro.testing import LocalApp

APP = '''
from duro import DurableObject


class Base(DurableObject):
    async def add(self, by=1):
        n = (self.ctx.storage.kv.get("n") or 0) + by
        self.ctx.storage.kv.put("n", n)
        return n

    async def value(self):
        return self.ctx.storage.kv.get("n") or 0

    async def ring_at(self, ms):
        await self.ctx.storage.set_alarm(ms)

    async def alarm(self, info=None):
        self.ctx.storage.kv.put("rang", (self.ctx.storage.kv.get("rang") or 0) + 1)

    async def rang(self):
        return self.ctx.storage.kv.get("rang") or 0


class Counter(Base):
    pass


class Tally(Base):
    pass


class Junk(Base):
    pass


class Room(Base):
    pass
'''


def project(folder, name, bindings, migrations):
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text(APP)
    lines = [f'[project]\nname = "{name}"\n', "[tool.duro]", 'main = "app.py"', "[tool.duro.bindings]"]
    lines += [f'{b} = "{c}"' for b, c in bindings.items()]
    for m in migrations:
        lines.append("[[tool.duro.migrations]]")
        lines += [f"{k} = {json.dumps(v)}" if not isinstance(v, list) or not v or not isinstance(v[0], dict)
                  else f"{k} = [" + ", ".join("{ " + ", ".join(f'{kk} = "{vv}"' for kk, vv in d.items()) + " }"
                                               for d in v) + "]" for k, v in m.items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return folder


V1 = [{"tag": "v1", "new_sqlite_classes": ["Counter", "Junk"]}]
V2 = V1 + [{"tag": "v2", "renamed_classes": [{"from": "Counter", "to": "Tally"}], "deleted_classes": ["Junk"]}]


async def test_rename_keeps_names_ids_data_and_alarms_and_delete_removes(tmp_path):
    data = tmp_path / "data"
    clock = VirtualClock()
    proj = project(tmp_path / "shop", "shop", {"COUNTER": "Counter", "JUNK": "Junk"}, V1)
    async with LocalApp(proj, data, clock=clock, durability="os") as app:
        assert await app.env.COUNTER.get_by_name("apples").add(3) == 3
        uid = app.env.COUNTER.new_unique_id()
        assert await app.env.COUNTER.get(uid).add(7) == 7
        await app.env.COUNTER.get_by_name("apples").ring_at(int(clock.now() * 1000) + 60_000)
        await app.env.JUNK.get_by_name("x").add()
    assert (data / "do" / "shop-Junk").is_dir()

    project(proj, "shop", {"COUNTER": "Tally"}, V2)
    async with LocalApp(proj, data, clock=clock, durability="os") as app:
        assert [c.move.kind for c in app.runtime.migrated] == ["rename", "delete"]
        ns = app.env.COUNTER
        assert ns.unique_key == "shop-Tally"
        assert await ns.get_by_name("apples").value() == 3
        again = ns.id_from_string(str(uid))  # an ID string stored before the rename still works
        assert await ns.get(again).value() == 7
        await app.advance(61)
        assert await ns.get_by_name("apples").rang() == 1
    assert not (data / "do" / "shop-Counter").exists()
    assert not (data / "do" / "shop-Junk").exists()

    # The next start applies nothing again.
    async with LocalApp(proj, data, clock=clock, durability="os") as app:
        assert app.runtime.migrated == []
        assert await app.env.COUNTER.get_by_name("apples").value() == 3


async def test_transfer_from_another_script(tmp_path):
    data = tmp_path / "data"
    other = project(tmp_path / "other", "other", {"ROOMS": "Room"}, [{"tag": "v1", "new_sqlite_classes": ["Room"]}])
    async with LocalApp(other, data, durability="os") as app:
        assert await app.env.ROOMS.get_by_name("lobby").add(5) == 5
    mine = project(tmp_path / "mine", "mine", {"ROOMS": "Room"},
                   [{"tag": "t1", "transferred_classes": [{"from": "Room", "from_script": "other", "to": "Room"}]}])
    async with LocalApp(mine, data, durability="os") as app:
        assert await app.env.ROOMS.get_by_name("lobby").value() == 5
    assert not (data / "do" / "other-Room").exists()


async def test_a_tag_removed_from_the_config_is_refused_at_start(tmp_path):
    data = tmp_path / "data"
    proj = project(tmp_path / "shop", "shop", {"COUNTER": "Tally"}, V2)
    async with LocalApp(proj, data, durability="os"):
        pass
    project(proj, "shop", {"COUNTER": "Counter"}, V1)
    with pytest.raises(ConfigError, match="tag 'v2' was applied to this data"):
        async with LocalApp(proj, data, durability="os"):
            pass
    # The refused start let go of the data directory: a good configuration starts.
    project(proj, "shop", {"COUNTER": "Tally"}, V2)
    async with LocalApp(proj, data, durability="os"):
        pass


def test_renaming_into_an_existing_class_is_a_config_error(tmp_path):
    from duro.config import load_project
    proj = project(tmp_path / "shop", "shop", {"COUNTER": "Tally"},
                   [{"tag": "v1", "new_sqlite_classes": ["Counter", "Tally"]},
                    {"tag": "v2", "renamed_classes": [{"from": "Counter", "to": "Tally"}]}])
    with pytest.raises(ConfigError, match=textwrap.dedent(r"migrations\[1\]\.renamed_classes\[0\]\.to: class Tally "
                                                          r"already exists")):
        load_project(proj)
