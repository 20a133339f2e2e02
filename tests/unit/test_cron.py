"""Cron expressions as Cloudflare reads them (its documented examples, its Quartz-like extensions,
its weekday numbering from Sunday = 1) and the timetable's rule for missed times, with no clock."""

import datetime

import pytest

from duro.core.cron import MINUTE_MS, CronExpression, CronSyntaxError, CronTimetable, Fire

UTC = datetime.timezone.utc


def ms(text):
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def iso(t):
    return datetime.datetime.fromtimestamp(t / 1000, UTC).strftime("%a %Y-%m-%d %H:%M")


def upcoming(expr, after, n):
    c = CronExpression.parse(expr)
    out, t = [], ms(after)
    for _ in range(n):
        t = c.next_after(t)
        out.append(iso(t))
    return out


# Cloudflare's documented examples (developers.cloudflare.com/workers/configuration/cron-triggers).
@pytest.mark.parametrize("expr, after, expected", [
    ("* * * * *", "2024-01-01T00:00:30", ["Mon 2024-01-01 00:01", "Mon 2024-01-01 00:02"]),
    ("*/30 * * * *", "2024-01-01T00:00:00", ["Mon 2024-01-01 00:30", "Mon 2024-01-01 01:00"]),
    ("45 * * * *", "2024-01-01T00:50:00", ["Mon 2024-01-01 01:45", "Mon 2024-01-01 02:45"]),
    ("0 17 * * sun", "2024-01-01T00:00:00", ["Sun 2024-01-07 17:00", "Sun 2024-01-14 17:00"]),
    ("0 17 * * 1", "2024-01-01T00:00:00", ["Sun 2024-01-07 17:00", "Sun 2024-01-14 17:00"]),
    ("10 7 * * mon-fri", "2024-01-05T08:00:00", ["Mon 2024-01-08 07:10", "Tue 2024-01-09 07:10"]),
    ("10 7 * * 2-6", "2024-01-05T08:00:00", ["Mon 2024-01-08 07:10", "Tue 2024-01-09 07:10"]),
    ("0 15 1 * *", "2024-01-01T16:00:00", ["Thu 2024-02-01 15:00", "Fri 2024-03-01 15:00"]),
    ("0 18 * * 6L", "2024-01-01T00:00:00", ["Fri 2024-01-26 18:00", "Fri 2024-02-23 18:00"]),
    ("0 18 * * friL", "2024-01-01T00:00:00", ["Fri 2024-01-26 18:00", "Fri 2024-02-23 18:00"]),
    ("59 23 LW * *", "2024-03-01T00:00:00", ["Fri 2024-03-29 23:59", "Tue 2024-04-30 23:59"]),
    ("*/3 * * * *", "2024-01-01T00:00:00", ["Mon 2024-01-01 00:03", "Mon 2024-01-01 00:06"]),
])
def test_cloudflare_documented_examples(expr, after, expected):
    assert upcoming(expr, after, len(expected)) == expected


@pytest.mark.parametrize("expr, after, expected", [
    # lists, ranges, steps with a start, ranges with a step
    ("5,20,40 * * * *", "2024-01-01T00:00:00", ["00:05", "00:20", "00:40", "01:05"]),
    ("10-12 * * * *", "2024-01-01T00:00:00", ["00:10", "00:11", "00:12", "01:10"]),
    ("50/5 * * * *", "2024-01-01T00:00:00", ["00:50", "00:55", "01:50"]),
    ("0-30/15 * * * *", "2024-01-01T00:00:00", ["00:15", "00:30", "01:00"]),
    # a range that wraps past its field's end, as Cloudflare's parser allows
    ("0 22-1 * * *", "2024-01-01T00:30:00", ["01:00", "22:00", "23:00", "00:00"]),
])
def test_lists_ranges_and_steps(expr, after, expected):
    assert [s[-5:] for s in upcoming(expr, after, len(expected))] == expected


def test_month_names_are_case_insensitive_and_wrap():
    assert upcoming("0 0 1 nov-Feb *", "2024-03-01T00:00:00", 4) == [
        "Fri 2024-11-01 00:00", "Sun 2024-12-01 00:00", "Wed 2025-01-01 00:00", "Sat 2025-02-01 00:00"]


def test_day_of_month_extensions():
    # L: the last day; L-2: two days before it; 15W: the weekday nearest the 15th; 1W never
    # leaves the month (June 2024 begins on a Saturday: the Monday after).
    assert upcoming("0 0 L * *", "2024-02-01T00:00:00", 2) == ["Thu 2024-02-29 00:00", "Sun 2024-03-31 00:00"]
    assert upcoming("0 0 L-2 * *", "2024-02-01T00:00:00", 2) == ["Tue 2024-02-27 00:00", "Fri 2024-03-29 00:00"]
    assert upcoming("0 0 15W * *", "2024-06-01T00:00:00", 2) == ["Fri 2024-06-14 00:00", "Mon 2024-07-15 00:00"]
    assert upcoming("0 0 1W * *", "2024-06-01T00:00:00", 1) == ["Mon 2024-06-03 00:00"]
    # The last weekday when the month ends on a Sunday (June 2024): Friday the 28th.
    assert upcoming("0 0 LW 6 *", "2024-06-01T00:00:00", 1) == ["Fri 2024-06-28 00:00"]


def test_day_of_week_extensions():
    # 2#1: the first Monday; L alone in the weekday field is Saturday (Quartz).
    assert upcoming("0 0 * * 2#1", "2024-06-01T00:00:00", 2) == ["Mon 2024-06-03 00:00", "Mon 2024-07-01 00:00"]
    assert upcoming("0 0 * * L", "2024-06-01T00:00:00", 1) == ["Sat 2024-06-08 00:00"]


def test_day_of_month_and_weekday_together_fire_on_either():
    # Both restricted: the 1st of the month OR any Friday (Feb 2024: Fri 2nd, ... Fri 1st March).
    assert upcoming("0 0 1 * fri", "2024-02-01T00:00:00", 5) == [
        "Fri 2024-02-02 00:00", "Fri 2024-02-09 00:00", "Fri 2024-02-16 00:00", "Fri 2024-02-23 00:00",
        "Fri 2024-03-01 00:00"]


def test_leap_day_waits_for_the_next_leap_year():
    assert upcoming("0 0 29 2 *", "2024-03-01T00:00:00", 1) == ["Tue 2028-02-29 00:00"]


def test_matches_is_per_minute():
    c = CronExpression.parse("*/15 * * * *")
    assert c.matches(ms("2024-01-01T00:15:00")) and c.matches(ms("2024-01-01T00:15:59"))
    assert not c.matches(ms("2024-01-01T00:16:00"))


@pytest.mark.parametrize("expr, words", [
    ("* * * *", "has 4 fields"),
    ("* * * * * *", "has 6 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range 0-23"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13 is out of range 1-12"),
    ("* * * * 0", "weekdays are 1-7 from Sunday"),
    ("* * * * 8", "day of week: 8 is out of range 1-7"),
    ("*/0 * * * *", "step 0 is out of range"),
    ("* * * * 2#6", "#6"),
    ("* * L-31 * *", "offset 31"),
    ("* * * foo *", "not a number or a 3-letter name"),
    ("1,,2 * * * *", "cannot read ''"),
    ("? * * * *", "cannot read '?'"),
    ("* * 30 2 *", "never fires"),
])
def test_invalid_expressions_say_what_is_wrong(expr, words):
    with pytest.raises(CronSyntaxError) as e:
        CronExpression.parse(expr)
    assert words in str(e.value)


def test_the_text_is_kept_exactly():
    assert CronExpression.parse("0  * * * *").text == "0  * * * *"


# ---------------------------------------------------------------------- the timetable
def table(*exprs):
    return CronTimetable(CronExpression.parse(e) for e in exprs)


def test_timetable_fires_each_matching_minute_once():
    t = table("*/2 * * * *")
    t.start(ms("2024-01-01T00:00:30"))
    # The current minute (00:00) matches and was never fired: it still runs, a little late.
    assert t.take_due(ms("2024-01-01T00:00:30")) == [Fire("*/2 * * * *", ms("2024-01-01T00:00:00"))]
    assert t.take_due(ms("2024-01-01T00:01:59")) == []
    assert t.next_wake() == ms("2024-01-01T00:02:00")
    assert t.take_due(ms("2024-01-01T00:02:00")) == [Fire("*/2 * * * *", ms("2024-01-01T00:02:00"))]
    assert t.last_fired == {"*/2 * * * *": ms("2024-01-01T00:02:00")}


def test_a_restart_within_the_fired_minute_does_not_fire_again():
    t = table("* * * * *")
    t.start(ms("2024-01-01T00:00:40"), {"* * * * *": ms("2024-01-01T00:00:00")})
    assert t.take_due(ms("2024-01-01T00:00:40")) == []
    assert t.next_wake() == ms("2024-01-01T00:01:00")


def test_times_missed_while_down_are_not_run():
    t = table("*/5 * * * *")
    # Last run at 00:05, back at 00:31: 00:10 ... 00:30 are not backfilled; 00:35 is next.
    t.start(ms("2024-01-01T00:31:00"), {"*/5 * * * *": ms("2024-01-01T00:05:00")})
    assert t.take_due(ms("2024-01-01T00:31:00")) == []
    assert t.next_wake() == ms("2024-01-01T00:35:00")


def test_a_wake_up_more_than_a_minute_late_skips_and_counts():
    t = table("* * * * *")
    t.start(ms("2024-01-01T00:00:00") - 1)
    # The machine slept from 00:00 to 00:03:10: only the current minute runs.
    assert t.take_due(ms("2024-01-01T00:03:10")) == [Fire("* * * * *", ms("2024-01-01T00:03:00"))]
    assert t.skipped == 1
    assert t.next_wake() == ms("2024-01-01T00:04:00")


def test_two_triggers_at_the_same_minute_both_fire_and_forgotten_triggers_are_dropped():
    t = table("*/2 * * * *", "30 * * * *")
    t.start(ms("2024-01-01T00:29:10"), {"gone * * * *": 1})
    assert t.take_due(ms("2024-01-01T00:30:00")) == [
        Fire("*/2 * * * *", ms("2024-01-01T00:30:00")), Fire("30 * * * *", ms("2024-01-01T00:30:00"))]
    assert set(t.last_fired) == {"*/2 * * * *", "30 * * * *"}
    assert MINUTE_MS == 60_000


# ---------------------------------------------------------------------- configuration
def project(root, name, text):
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "entry.py").write_text("# entry\n")
    (root / name).write_text(text)
    return root


def test_config_reads_wrangler_triggers_and_tool_duro_crons(tmp_path):
    from duro.config import load_project
    a = project(tmp_path / "a", "wrangler.jsonc",
                '{"name": "a", "main": "src/entry.py", "triggers": {"crons": ["*/3 * * * *", "0 15 1 * *"]}}')
    assert load_project(a).crons == ("*/3 * * * *", "0 15 1 * *")
    b = project(tmp_path / "b", "wrangler.toml", 'name = "b"\nmain = "src/entry.py"\n[triggers]\ncrons = ["0 * * * *"]\n')
    assert load_project(b).crons == ("0 * * * *",)
    c = project(tmp_path / "c", "pyproject.toml", '[tool.duro]\nmain = "src/entry.py"\ncrons = ["59 23 LW * *"]\n')
    assert load_project(c).crons == ("59 23 LW * *",)
    d = project(tmp_path / "d", "wrangler.jsonc", '{"name": "d", "main": "src/entry.py"}')
    assert load_project(d).crons == ()


@pytest.mark.parametrize("triggers, words", [
    ('{"crons": "* * * * *"}', "wrangler.jsonc: triggers.crons: must be an array"),
    ('{"crons": [5]}', "wrangler.jsonc: triggers.crons[0]: must be a non-empty string"),
    ('{"crons": ["* * * * *", "* * * * *"]}', 'triggers.crons[1]: "* * * * *" is listed twice (also triggers.crons[0])'),
    ('["* * * * *"]', "wrangler.jsonc: triggers: must be a table/object"),
])
def test_config_refuses_malformed_triggers(tmp_path, triggers, words):
    from duro.config import load_project
    from duro.errors import ConfigError
    root = project(tmp_path, "wrangler.jsonc", f'{{"name": "x", "main": "src/entry.py", "triggers": {triggers}}}')
    with pytest.raises(ConfigError) as e:
        load_project(root)
    assert words in str(e.value)


def test_an_invalid_expression_stops_the_app_from_loading(tmp_path):
    from duro.compat import load_app
    from duro.errors import ConfigError
    root = project(tmp_path / "p", "wrangler.jsonc",
                   '{"name": "x", "main": "src/entry.py", "triggers": {"crons": ["0 * * * *", "0 17 * * 0"]}}')
    with pytest.raises(ConfigError) as e:
        load_app(root, data_dir=tmp_path / "data")
    assert "triggers.crons[1]: day of week: 0 is out of range 1-7" in str(e.value)
