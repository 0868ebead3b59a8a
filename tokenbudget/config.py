"""The user's config file (budgets and settings) and a project's checked-in budgets."""

from __future__ import annotations

import json
import os

from . import clock, paths
from .errors import ConfigError
from .limits import Budget, applies_to, merge, normalize_command, normalize_project
from .record import Frozen

# typing costs a hook call about 5 ms to import; zoneinfo (with sysconfig) 2.5 ms and
# datetime 1 ms: a hook call with nothing new finds the day's, week's and month's bounds in
# the hot view's window cache (hot.py) instead, so they are imported where a zone is read.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import tzinfo

    from .limits import Source

VERSION = 1
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Where a project keeps budgets its team shares, relative to the project folder. Paths are
# strings, not pathlib's: importing it costs a hook call about 5 ms.
PROJECT_FOLDER = ".claude"
PROJECT_FILE = os.path.join(PROJECT_FOLDER, "tokenbudget.json")
LOCALTIME = "/etc/localtime"  # the system's zone when $TZ is not set (tests point it elsewhere)

_SETTINGS = frozenset({
    "version", "budgets", "timezone", "week_start", "fail_closed", "lock_timeout_seconds",
    "context_hint", "retention_days", "prices", "team",
})
# Team mode (`tokenbudget team join`): where the team's database is and who this member is.
TEAM_FIELDS = ("dsn", "team", "member")


def _q(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class Config(Frozen):
    """Everything in config.json; the defaults are what a missing file means."""

    _fields = ("budgets", "timezone", "week_start", "fail_closed", "lock_timeout_seconds",
               "context_hint", "retention_days", "prices", "team")
    __slots__ = _fields
    budgets: tuple[Budget, ...]
    timezone: str | None  # an IANA name; None follows the system (and $TZ)
    week_start: int  # 0 = Monday ... 6 = Sunday
    fail_closed: bool
    lock_timeout_seconds: float
    context_hint: bool
    # Days a session may stay idle before it folds out of the ledger into history: the
    # ledger keeps one record per API request of the sessions it holds, so this bounds its size.
    retention_days: int
    prices: Mapping[str, Mapping[str, float]]
    team: Mapping[str, str] | None  # TEAM_FIELDS, or None outside team mode

    def __init__(
        self,
        budgets: tuple[Budget, ...] = (),
        timezone: str | None = None,
        week_start: int = 0,
        fail_closed: bool = False,
        lock_timeout_seconds: float = 2.0,
        context_hint: bool = False,
        retention_days: int = 2,
        prices: Mapping[str, Mapping[str, float]] | None = None,  # None: a new empty dict
        team: Mapping[str, str] | None = None,
    ) -> None:
        self._set(budgets=budgets, timezone=timezone, week_start=week_start,
                  fail_closed=fail_closed, lock_timeout_seconds=lock_timeout_seconds,
                  context_hint=context_hint, retention_days=retention_days,
                  prices={} if prices is None else prices, team=team)

    def tz(self) -> tzinfo:
        """The zone calendar budgets follow: the configured one, else the system's."""
        if self.timezone is None:
            return local_zone()
        return _zone(self.timezone)

    def to_json(self) -> dict[str, object]:
        """The config as written to config.json."""
        data: dict[str, object] = {
            "version": VERSION,
            "budgets": [b.to_json() for b in self.budgets],
            "timezone": self.timezone,
            "week_start": WEEKDAYS[self.week_start],
            "fail_closed": self.fail_closed,
            "lock_timeout_seconds": self.lock_timeout_seconds,
            "context_hint": self.context_hint,
            "retention_days": self.retention_days,
            "prices": {model: dict(rates) for model, rates in self.prices.items()},
        }
        if self.team is not None:
            data["team"] = dict(self.team)
        return data

    @classmethod
    def from_json(cls, data: object) -> Config:
        """Read a parsed config.json; a ConfigError says which setting is wrong and why."""
        if not isinstance(data, dict):
            raise ConfigError("must hold a JSON object")
        _check_version(data)
        for key in data:
            if key not in _SETTINGS:
                raise ConfigError(f"unknown setting {_q(key)}")
        defaults = cls()
        timezone = data.get("timezone")
        if timezone is not None:
            if not isinstance(timezone, str):
                raise ConfigError(f"timezone: must be a zone name or null, not {_q(timezone)}")
            _check_zone(timezone)
        return cls(
            budgets=_budgets(data.get("budgets", []), source="user"),
            timezone=timezone,
            week_start=_week_start(data.get("week_start", WEEKDAYS[defaults.week_start])),
            fail_closed=_bool(data, "fail_closed", defaults.fail_closed),
            lock_timeout_seconds=_number(data, "lock_timeout_seconds",
                                         defaults.lock_timeout_seconds),
            context_hint=_bool(data, "context_hint", defaults.context_hint),
            retention_days=int(_number(data, "retention_days", defaults.retention_days,
                                       whole=True)),
            prices=_prices(data.get("prices", {})),
            team=_team(data.get("team")),
        )


def _team(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(TEAM_FIELDS) or not all(
        isinstance(v, str) and v for v in value.values()
    ):
        raise ConfigError(f"team: must be an object of non-empty {', '.join(TEAM_FIELDS)}")
    return {k: value[k] for k in TEAM_FIELDS}


def _check_version(data: Mapping[str, object]) -> None:
    version = data.get("version", VERSION)  # hand-written files may leave it out
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"version: must be a whole number, not {_q(version)}")
    if version > VERSION:
        raise ConfigError(f"version {version} is newer than this tokenbudget reads "
                          f"({VERSION}); upgrade tokenbudget")
    # Older versions would be upgraded here; version 1 is the first.


def _check_zone(name: str) -> None:
    """Refuse a zone name zoneinfo does not know. A name whose zone file is where zoneinfo
    looks is known without importing it (2.5 ms a hook call, which a call far from its limits
    otherwise never pays); anything else, zoneinfo decides and says."""
    found = None if os.path.isabs(name) else paths.zone_file(name)
    if found is not None:
        try:
            with open(found, "rb") as f:
                if _whole_tzif(f.read()):
                    return
        except OSError:
            pass
    _zone(name)


def _whole_tzif(data: bytes) -> bool:
    """Whether `data` is a zone file as long as its first header says (RFC 8536: the magic,
    then six counts, then the data they size): a file cut short or not one at all goes to
    zoneinfo, which says why it cannot be read."""
    if len(data) < 44 or data[:4] != b"TZif":
        return False
    ut, std, leap, times, types, chars = (
        int.from_bytes(data[20 + 4 * i:24 + 4 * i], "big") for i in range(6))
    size = 44 + times * 5 + types * 6 + chars + leap * 8 + std + ut
    return types >= 1 and len(data) >= size


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"timezone: unknown time zone {_q(name)}") from None


def local_zone() -> tzinfo:
    """The system's zone with its DST rules: $TZ if it names one, else /etc/localtime."""
    from datetime import UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    env = os.environ.get("TZ")
    if env is not None:
        name = env.removeprefix(":")
        if not name:
            return UTC  # POSIX: an empty TZ means UTC
        try:
            if os.path.isabs(name):
                with open(name, "rb") as f:
                    return ZoneInfo.from_file(f, key=name)
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # A POSIX rule string ("CET-1CEST,M3.5.0,M10.5.0/3") is no zone name: the C
            # library understands it, so fall through to its view below.
            return _libc_zone()
    try:
        target = os.readlink(LOCALTIME)
        _, found, name = target.rpartition("zoneinfo/")
        if found:
            return ZoneInfo(name)
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open(LOCALTIME, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return _libc_zone()


def _libc_zone() -> tzinfo:
    # Last resort (e.g. Windows without tzdata): a fixed offset, right until the next DST change.
    from datetime import UTC, datetime

    zone = datetime.fromtimestamp(clock.now()).astimezone().tzinfo
    return zone if zone is not None else UTC


def _budgets(
    items: object, *, source: Source, project_dir: str | None = None
) -> tuple[Budget, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"budgets: must be a list, not {_q(items)}")
    found: dict[tuple[str, str | None, str | None, str], int] = {}
    budgets: list[Budget] = []
    for i, item in enumerate(items):
        where = f"budgets[{i}]"
        if isinstance(item, dict):
            item = _prepare(item, where, project_dir)
        budget = Budget.from_json(item, where=where, source=source)
        if budget.key in found:
            raise ConfigError(f"{where}: the same budget as budgets[{found[budget.key]}] "
                              f"({budget.id}, {budget.unit})")
        found[budget.key] = i
        budgets.append(budget)
    return tuple(budgets)


def _prepare(item: dict[str, object], where: str, project_dir: str | None) -> dict[str, object]:
    item = dict(item)
    kind = item.get("kind")
    kind = kind.strip().lower() if isinstance(kind, str) else kind
    if project_dir is None:
        # The user's file may say ~/code/x; the pure budget rules never read $HOME.
        for key in ("project", "name") if kind == "project" else ("project",):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = os.path.expanduser(value)
        return item
    # A checked-in file is shared between machines, so it cannot name absolute folders:
    # its budgets always apply to the project it lives in.
    for key in ("project", "name") if kind == "project" else ("project",):
        if key in item:
            raise ConfigError(f"{where}.{key}: not allowed in a project's file; "
                              "its budgets apply to that project")
    if kind == "project":
        item["name"] = project_dir
    elif kind in ("total", "daily", "weekly", "monthly", "5h"):
        item["project"] = project_dir
    return item


def _week_start(value: object) -> int:
    if isinstance(value, str):
        name = value.strip().lower()
        for i, day in enumerate(WEEKDAYS):
            if name in (day, day[:3]):
                return i
    raise ConfigError(f"week_start: must be a day name like \"monday\", not {_q(value)}")


def _bool(data: Mapping[str, object], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, not {_q(value)}")
    return value


def _number(data: Mapping[str, object], key: str, default: float, *, whole: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{key}: must be a number above 0, not {_q(value)}")
    if whole and value != int(value):
        raise ConfigError(f"{key}: must be a whole number, not {_q(value)}")
    return float(value)


def _prices(value: object) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise ConfigError(f"prices: must be an object of models, not {_q(value)}")
    prices: dict[str, dict[str, float]] = {}
    if not value:
        return prices  # most configs: a hook call need not import usage for them
    # Price rates are named after the Usage fields they multiply.
    from .usage import Usage

    for model, rates in value.items():
        where = f"prices.{model}"
        if not isinstance(rates, dict):
            raise ConfigError(f"{where}: must be an object of rates, not {_q(rates)}")
        prices[model] = {}
        for rate, price in rates.items():
            if rate not in Usage._fields:
                raise ConfigError(f"{where}: unknown rate {_q(rate)}; use one of "
                                  f"{', '.join(Usage._fields)}")
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise ConfigError(f"{where}.{rate}: must be a number of at least 0, "
                                  f"not {_q(price)}")
            prices[model][rate] = float(price)
    return prices


MAX_FILE_BYTES = 1024 * 1024  # a budget file is a few hundred bytes; more is not one


def _read_json(path: str) -> object | None:
    """The parsed file, or None when it does not exist; a ConfigError names the file."""
    import stat

    try:
        # The project's file comes with whatever repository was cloned: a FIFO there would
        # hang every hook, a link to /dev/zero would read until memory runs out.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise ConfigError(f"{path}: cannot read: {kind}")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: cannot read: larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        data: object = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} "
                          f"column {e.colno}") from None
    return data


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read config.json; a missing file gives the defaults, a broken one a ConfigError."""
    path = os.fspath(path if path is not None else paths.config_file())
    data = _read_json(path)
    if data is None:
        return Config()
    try:
        return Config.from_json(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_config(config: Config, path: str | os.PathLike[str] | None = None) -> str:
    """Write config.json atomically, readable by the user alone; return its path."""
    from .fileio import replace_atomically

    path = os.fspath(path if path is not None else paths.config_file())
    folder = os.path.dirname(path) or os.curdir
    text = json.dumps(config.to_json(), indent=2, ensure_ascii=False) + "\n"
    try:
        paths.ensure_private_dir(folder)
        replace_atomically(path, text.encode())
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def project_file(project_dir: str | os.PathLike[str]) -> str:
    """Where a project keeps its shared budgets."""
    return os.path.join(project_dir, PROJECT_FILE)


def load_project_budgets(project_dir: str | os.PathLike[str]) -> list[Budget]:
    """The budgets in `<project>/.claude/tokenbudget.json`, scoped to that project."""
    path = project_file(project_dir)
    data = _read_json(path)
    if data is None:
        return []
    try:
        if not isinstance(data, dict):
            raise ConfigError('must hold a JSON object like {"budgets": [...]}')
        _check_version(data)
        for key in data:
            if key not in ("version", "budgets"):
                raise ConfigError(f"unknown setting {_q(key)}; a project's file holds budgets")
        folder = normalize_project(os.path.abspath(project_dir))
        budgets = _budgets(data.get("budgets", []), source="project", project_dir=folder)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return list(budgets)


def effective_budgets(
    config: Config, project_dir: str | os.PathLike[str] | None
) -> list[Budget]:
    """The budgets that apply to work in `project_dir`: the user's and the project's, merged."""
    folder = normalize_project(os.path.abspath(project_dir)) if project_dir else None
    project = load_project_budgets(project_dir) if project_dir else []
    return [b for b in merge(config.budgets, project) if applies_to(b, folder)]


def set_budget(config: Config, budget: Budget) -> Config:
    """The config with `budget` added, or replacing the budget with the same key."""
    budget = budget.replace(source="user")
    budgets = list(config.budgets)
    for i, old in enumerate(budgets):
        if old.key == budget.key:
            budgets[i] = budget
            break
    else:
        budgets.append(budget)
    return config.replace(budgets=tuple(budgets))


def remove_budget(
    config: Config,
    kind: str,
    name: str | None = None,
    project: str | None = None,
    unit: str | None = None,
) -> Config:
    """The config without the matching budget(s) (either unit unless `unit` is given)."""
    if kind == "command" and name is not None:
        name = normalize_command(name)
    elif kind == "project" and name is not None:
        name = normalize_project(os.path.expanduser(name))
    if project is not None:
        project = normalize_project(os.path.expanduser(project))
    kept = tuple(
        b for b in config.budgets
        if not (b.kind == kind and b.name == name and b.project == project
                and unit in (None, b.unit))
    )
    if len(kept) == len(config.budgets):
        label = kind if name is None else f"{kind} {name}"
        label = label if project is None else f"{label}@{project}"
        raise ConfigError(f"no {label} budget{'' if unit is None else f' in {unit}'} to remove")
    return config.replace(budgets=kept)


def find_project_root(start: str | os.PathLike[str]) -> str:
    """The project folder `start` is in, as the hook sees it; `start` itself if none is found.

    $CLAUDE_PROJECT_DIR wins (the hook reads budgets there); else the nearest folder up from
    `start` holding `.claude/tokenbudget.json`, else the nearest holding a `.claude/` folder.
    """
    env = os.environ.get("CLAUDE_PROJECT_DIR")
    if env:
        return env
    start = os.path.abspath(start)
    # The home folder's .claude/ is Claude Code's own, not a project's, and nothing above home
    # is the user's project: the walk stops below home (or below the filesystem root).
    stops: set[str] = set()
    home = os.path.expanduser("~")
    if not home.startswith("~"):  # else no home folder can be determined
        stops = {os.path.normcase(os.path.normpath(home)), os.path.normcase(os.path.realpath(home))}
    below: list[str] = []
    folder = start
    while os.path.normcase(folder) not in stops:
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        below.append(folder)
        folder = parent
    # os.path's checks answer False on any OSError: an unreadable folder is not a project.
    for folder in below:
        if os.path.exists(os.path.join(folder, PROJECT_FILE)):
            return folder
    for folder in below:
        if os.path.isdir(os.path.join(folder, PROJECT_FOLDER)):
            return folder
    return start
