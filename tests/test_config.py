"""The config file: defaults, round trip, one-line errors, private modes, project budgets."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget import config, paths
from tokenbudget.budgets import Budget
from tokenbudget.config import (
    Config,
    effective_budgets,
    load_config,
    load_project_budgets,
    local_zone,
    remove_budget,
    save_config,
    set_budget,
)
from tokenbudget.errors import ConfigError


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_missing_file_gives_defaults() -> None:
    config = load_config()
    assert config == Config()
    assert (config.budgets, config.timezone, config.week_start, config.fail_closed) == (
        (), None, 0, False)
    assert (config.lock_timeout_seconds, config.context_hint, config.retention_days) == (
        2.0, False, 2)
    assert not paths.config_path().exists()  # reading never creates it


def test_round_trip() -> None:
    config = Config(
        budgets=(
            Budget("daily", 200_000),
            Budget("monthly", 50, "usd", mode="warn", warn_at=0.5),
            Budget("command", 40_000, name="/test"),
            Budget("5h", 1_000_000, project="/work/proj"),
        ),
        timezone="Europe/Paris",
        week_start=6,
        fail_closed=True,
        lock_timeout_seconds=0.5,
        context_hint=True,
        retention_days=30,
        prices={"claude-x": {"input": 3.0, "output": 15.0}},
    )
    path = save_config(config)
    assert path == os.fspath(paths.config_path())
    assert load_config() == config
    data = json.loads(Path(path).read_text())
    assert data["version"] == 1
    assert data["week_start"] == "sunday"
    assert data["budgets"][0] == {"kind": "daily", "limit": 200000, "unit": "tokens",
                                  "mode": "block", "warn_at": 0.8}


def test_hand_written_file() -> None:
    write(paths.config_path(), {
        "budgets": [{"kind": "daily", "limit": "200k"}, {"kind": "weekly", "limit": "$20",
                                                        "warn_at": "90%"}],
        "week_start": "Sun",
    })
    config = load_config()
    assert config.budgets == (Budget("daily", 200_000), Budget("weekly", 20, "usd", warn_at=0.9))
    assert config.week_start == 6


def test_files_are_private_and_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "nested" / "config.json"
    save_config(Config(budgets=(Budget("daily", 1000),)), path)
    save_config(Config(budgets=(Budget("daily", 2000),)), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["config.json"]  # no temp file left behind
    assert load_config(path).budgets == (Budget("daily", 2000),)


def test_loose_config_dir_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    save_config(Config(), folder / "config.json")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_write_failure_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as e:
        save_config(Config(), blocker / "config.json")
    assert str(e.value).startswith(f"{blocker / 'config.json'}: cannot write")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes at line 1 "
              "column 2"),
        ("", "not valid JSON: Expecting value at line 1 column 1"),
        ([], "must hold a JSON object"),
        ({"version": 2}, "version 2 is newer than this tokenbudget reads (1); upgrade tokenbudget"),
        ({"version": "1"}, 'version: must be a whole number, not "1"'),
        ({"fail_close": True}, 'unknown setting "fail_close"'),
        ({"budgets": {}}, "budgets: must be a list, not {}"),
        ({"budgets": [{"kind": "daily", "limit": 1}, {"kind": "daily", "limit": 2},
                      {"kind": "daily", "limit": "12x"}]},
         "budgets[1]: the same budget as budgets[0] (daily, tokens)"),
        ({"budgets": [{"kind": "daily", "limit": 1}, {"kind": "weekly", "limit": 2},
                      {"kind": "daily", "limit": "12x", "unit": "usd"}]},
         'budgets[2].limit: cannot read "12x" as tokens or dollars'),
        ({"budgets": [{"kind": "daily", "limit": 1}, {"kind": "weekly", "limit": 2},
                      {"kind": "monthly", "limit": "12x"}]},
         'budgets[2].limit: cannot read "12x" as tokens or dollars'),
        ({"budgets": [{"kind": "yearly", "limit": 5}]}, 'budgets[0].kind: unknown kind "yearly"'),
        ({"budgets": ["daily"]}, "budgets[0]: must be an object like"),
        ({"budgets": [{"kind": "daily", "limit": 5, "project": "rel/dir"}]},
         'budgets[0].project: must be an absolute folder path, not "rel/dir"'),
        ({"timezone": "Mars/Olympus_Mons"}, 'timezone: unknown time zone "Mars/Olympus_Mons"'),
        ({"timezone": "../etc/passwd"}, 'timezone: unknown time zone "../etc/passwd"'),
        ({"timezone": "Europe//Berlin"}, 'timezone: unknown time zone "Europe//Berlin"'),
        ({"timezone": "Europe"}, 'timezone: unknown time zone "Europe"'),
        ({"timezone": "/usr/share/zoneinfo/UTC"},
         'timezone: unknown time zone "/usr/share/zoneinfo/UTC"'),
        ({"timezone": 1}, "timezone: must be a zone name or null, not 1"),
        ({"week_start": "someday"}, 'week_start: must be a day name like "monday", not "someday"'),
        ({"week_start": 0}, 'week_start: must be a day name like "monday", not 0'),
        ({"fail_closed": "yes"}, 'fail_closed: must be true or false, not "yes"'),
        ({"context_hint": 1}, "context_hint: must be true or false, not 1"),
        ({"lock_timeout_seconds": 0}, "lock_timeout_seconds: must be a number above 0, not 0"),
        ({"lock_timeout_seconds": True}, "lock_timeout_seconds: must be a number above 0"),
        ({"retention_days": 1.5}, "retention_days: must be a whole number, not 1.5"),
        ({"prices": []}, "prices: must be an object of models, not []"),
        ({"prices": {"m": 3}}, "prices.m: must be an object of rates, not 3"),
        ({"prices": {"m": {"inptu": 3}}}, 'prices.m: unknown rate "inptu"'),
        ({"prices": {"m": {"input": -1}}}, "prices.m.input: must be a number of at least 0"),
    ],
)
def test_every_error_is_one_line_naming_file_and_problem(content: object, problem: str) -> None:
    path = write(paths.config_path(), content)
    with pytest.raises(ConfigError) as e:
        load_config()
    message = str(e.value)
    assert message.startswith(f"{path}: {problem}")
    assert "\n" not in message


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "config.json"
    folder.mkdir()  # a folder where the file should be: reading fails for root too
    with pytest.raises(ConfigError, match=r"config\.json: cannot read: ") as e:
        load_config(folder)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- time zones


def test_configured_time_zone() -> None:
    assert Config(timezone="America/New_York").tz() == ZoneInfo("America/New_York")


def test_system_zone_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert Config().tz() == ZoneInfo("Europe/Paris")
    monkeypatch.setenv("TZ", ":America/New_York")
    assert local_zone() == ZoneInfo("America/New_York")
    monkeypatch.setenv("TZ", "")
    assert local_zone() is UTC


def _tzif(name: str) -> bytes:
    """The compiled rules of zone `name`, from wherever zoneinfo finds them."""
    import zoneinfo
    from importlib.resources import files

    for root in zoneinfo.TZPATH:
        path = Path(root, name)
        if path.is_file():
            return path.read_bytes()
    return files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()


def test_system_zone_without_tz_is_the_zone_localtime_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TZ")
    link = tmp_path / "localtime"
    # Only the link's target is read (the name after zoneinfo/), never the file it points to.
    link.symlink_to("/usr/share/zoneinfo/Asia/Kathmandu")
    monkeypatch.setattr(config, "LOCALTIME", str(link))
    assert local_zone() == ZoneInfo("Asia/Kathmandu")


def test_system_zone_without_tz_from_a_copied_zone_file_keeps_its_dst(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TZ")
    copy = tmp_path / "localtime"
    copy.write_bytes(_tzif("America/New_York"))  # a copy, as some images install it: no name
    monkeypatch.setattr(config, "LOCALTIME", str(copy))
    zone = local_zone()
    # Rules, not the offset of the day it was read: winter and summer differ.
    assert datetime(2027, 1, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=-5)
    assert datetime(2027, 7, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=-4)


def test_a_zone_file_that_is_not_one_is_refused_as_zoneinfo_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured zone is known without zoneinfo only when its file is a zone file."""
    (tmp_path / "Fake").mkdir()
    (tmp_path / "Fake" / "Zone").write_text("not a zone file")
    (tmp_path / "Fake" / "Real").write_bytes(_tzif("Europe/Berlin"))
    (tmp_path / "Fake" / "Magic").write_bytes(b"TZif")
    (tmp_path / "Fake" / "Cut").write_bytes(_tzif("Europe/Berlin")[:60])
    monkeypatch.setenv("PYTHONTZPATH", str(tmp_path))
    for name in ("Zone", "Magic", "Cut"):
        with pytest.raises(ConfigError, match=f'unknown time zone "Fake/{name}"'):
            Config.from_json({"timezone": f"Fake/{name}"})
    assert Config.from_json({"timezone": "Fake/Real"}).timezone == "Fake/Real"


def test_bad_zone_built_by_hand_fails_cleanly() -> None:
    with pytest.raises(ConfigError, match='unknown time zone "Nowhere/Land"'):
        Config(timezone="Nowhere/Land").tz()


# ---------------------------------------------------------------- project budgets


def test_project_budgets_apply_to_their_project(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project / ".claude" / "tokenbudget.json", {"budgets": [
        {"kind": "daily", "limit": "500k"},
        {"kind": "command", "name": "/test", "limit": "50k"},
        {"kind": "project", "limit": "$100"},
        {"kind": "session", "limit": "1M", "mode": "warn"},
    ]})
    assert load_project_budgets(project) == [
        Budget("daily", 500_000, project=str(project), source="project"),
        Budget("command", 50_000, name="/test", source="project"),
        Budget("project", 100, "usd", name=str(project), source="project"),
        Budget("session", 1_000_000, mode="warn", source="project"),
    ]


def test_no_project_file_means_no_project_budgets(tmp_path: Path) -> None:
    assert load_project_budgets(tmp_path) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"budgets": [{"kind": "daily", "limit": "5k", "project": "/elsewhere"}]},
         "budgets[0].project: not allowed in a project's file; its budgets apply to that project"),
        ({"budgets": [{"kind": "project", "limit": "5k", "name": "/elsewhere"}]},
         "budgets[0].name: not allowed in a project's file"),
        ({"budgets": [{"kind": "daily", "limit": "x"}]},
         'budgets[0].limit: cannot read "x" as tokens or dollars'),
        ({"timezone": "UTC"}, 'unknown setting "timezone"; a project\'s file holds budgets'),
        ("[1,", "not valid JSON"),
    ],
)
def test_project_file_errors_name_that_file(tmp_path: Path, content: object, problem: str) -> None:
    path = write(tmp_path / ".claude" / "tokenbudget.json", content)
    with pytest.raises(ConfigError) as e:
        load_project_budgets(tmp_path)
    assert str(e.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(e.value)


def test_effective_budgets_merge_and_scope(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project / ".claude" / "tokenbudget.json", {"budgets": [
        {"kind": "command", "name": "/test", "limit": "50k", "mode": "warn"},
        {"kind": "daily", "limit": "300k"},
    ]})
    config = Config(budgets=(
        Budget("command", 80_000, name="/test"),
        Budget("daily", 200_000),
        Budget("weekly", 1_000_000, project=str(project)),
        Budget("weekly", 9, project=str(tmp_path / "other")),
    ))
    assert effective_budgets(config, project) == [
        Budget("command", 50_000, name="/test", source="project"),  # stricter limit, block kept
        Budget("daily", 200_000),
        Budget("weekly", 1_000_000, project=str(project)),
        # The team's daily cap counts this project's work only, beside the user's own.
        Budget("daily", 300_000, project=str(project), source="project"),
    ]
    # Outside the project neither its file nor its scoped budgets apply.
    assert effective_budgets(config, None) == [config.budgets[0], config.budgets[1]]
    # The hook hands over the folder as a string, the CLI as a Path: the same folder either way.
    assert effective_budgets(config, str(project)) == effective_budgets(config, project)
    assert effective_budgets(config, f"{project}/") == effective_budgets(config, project)


# ---------------------------------------------------------------- CLI helpers


def test_set_budget_replaces_the_same_budget_only() -> None:
    config = Config(budgets=(Budget("daily", 100), Budget("weekly", 500)))
    config = set_budget(config, Budget("daily", 400, source="project"))
    config = set_budget(config, Budget("daily", 5, "usd"))  # another unit: added beside it
    assert config.budgets == (
        Budget("daily", 400), Budget("weekly", 500), Budget("daily", 5, "usd"))


def test_remove_budget() -> None:
    config = Config(budgets=(
        Budget("daily", 100), Budget("daily", 5, "usd"), Budget("command", 5, name="/test"),
        Budget("weekly", 5, project="/p"),
    ))
    assert remove_budget(config, "daily", unit="usd").budgets == config.budgets[0:1] + (
        config.budgets[2:])
    assert remove_budget(config, "daily").budgets == config.budgets[2:]
    assert remove_budget(config, "command", "test").budgets == (
        config.budgets[:2] + config.budgets[3:])
    assert remove_budget(config, "weekly", project="/p/").budgets == config.budgets[:3]
    with pytest.raises(ConfigError, match=r"^no command /deploy budget to remove$"):
        remove_budget(config, "command", "/deploy")
    with pytest.raises(ConfigError, match=r"^no weekly budget to remove$"):
        remove_budget(config, "weekly")
