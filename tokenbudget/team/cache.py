"""The team's totals and budgets as a hook sees them: no network, no database code.

`tokenbudget team sync` writes `team-cache.json` (the rollups of the current windows and the
team's budgets, with the time they were fetched); a hook adds this machine's usage not pushed
yet (the ledger's outbox) and measures each team budget as a local one is measured. An outbox
entry already pushed but not yet dropped, or a grown request sent again, counts twice until the
next sync: a hook errs towards the limit, never past it.

When the outbox holds usage and the last push is older than PUSH_EVERY (or at a Stop), or the
totals are older than PULL_EVERY, the hook starts a detached `tokenbudget team sync` and goes
on without waiting for it.

The one wait: a prompt near a team limit (a team budget past its warning threshold) decided on
totals older than FRESH_WITHIN fetches them again first, waiting REFRESH_WAIT at most (psycopg's
import included, which happens only then). A server that does not answer in time leaves the
decision to the cached totals, and the message says how old they are.
"""

from __future__ import annotations

import contextlib
import os
import sys

from tokenbudget.budgets import Budget, Check, evaluate, window
from tokenbudget.ledger import BUCKET
from tokenbudget.schema import OUT_BUCKET, OUT_COST, OUT_PROJECT, OUT_USAGE
from tokenbudget.team.files import cache_file, read_json, state_file, write_private_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    from tokenbudget.enforce import Context

    # The engine's own measure (engine.measure), handed in: this module sits below the engine.
    MeasureLocal: TypeAlias = Callable[[list[Budget], dict[str, Any], Context], list[Check]]

PUSH_EVERY = 5.0  # seconds: unpushed usage older than this starts a background sync
RETRY_EVERY = 30.0  # seconds between background syncs while the server fails us
PULL_EVERY = 30.0  # seconds: older team totals start a background sync, even with no usage
FRESH_WITHIN = 5.0  # seconds: near a team limit, older totals are fetched before a prompt
REFRESH_WAIT = 1.0  # seconds a prompt waits for them at most, psycopg's import included
_WINDOWS = {"daily": "day", "weekly": "week", "monthly": "month", "total": "total"}
# Team budgets each member keeps alone, measured from its own ledger: a session, a 5-hour
# block and a run of a slash command happen on one machine.
MEMBER_LOCAL = ("5h", "session", "command")
_WORDS = {"total": "all-time", "5h": "5-hour"}


class TeamBudget(Budget):
    """A budget kept in the team database: for the whole team, each member, or one project."""

    # Not `scope`: Budget.scope is the folder a local budget is limited to (budgets.applies_to).
    _fields = (*Budget._fields, "reach", "scope_name", "stale")  # type: ignore[assignment]
    __slots__ = ("reach", "scope_name", "stale")
    reach: str  # team, member or project
    scope_name: str  # the project's name, for scope project
    stale: float | None  # how old its totals were when the server did not answer a refresh

    def __init__(self, row: dict[str, Any], stale: float | None = None) -> None:
        super().__init__(row["kind"], float(row["limit"]), row["unit"], mode=row["mode"],
                         warn_at=float(row["warn_at"]), name=row.get("command") or None)
        self._set(reach=row["scope"], scope_name=row["name"], stale=stale)

    @property
    def id(self) -> str:
        if self.kind in MEMBER_LOCAL:  # each member's own by nature: no scope to name
            return f"team {self.name or self.kind}"
        extra = {"team": "", "member": " per member", "project": f" {self.scope_name}"}
        return f"team {self.kind}{extra[self.reach]}"

    @property
    def described(self) -> str:
        """How messages name it (budgets.label), with the age of its totals when a refresh
        failed."""
        what = f"{self.name or _WORDS.get(self.kind, self.kind)} budget"
        if self.kind in MEMBER_LOCAL:
            name = f"the team's {what}"
        elif self.reach == "member":
            name = f"your share of the team's {what}"
        elif self.reach == "project":
            name = f"the team's {what} for {self.scope_name}"
        else:
            name = f"the team's {what}"
        if self.stale is not None:
            name += f" (totals from {age(self.stale)} ago: the team database did not answer)"
        return name

    @property
    def short(self) -> str:
        """How the status line names it: `team daily`, `team daily/me`, `team daily/app`."""
        word = "all-time" if self.kind == "total" else self.kind
        if self.kind in MEMBER_LOCAL:
            return f"team {self.name or self.kind}"
        if self.reach == "member":
            return f"team {word}/me"
        if self.reach == "project":
            return f"team {word}/{self.scope_name.rsplit('/', 1)[-1][:12]}"
        return f"team {word}"

    def raise_command(self, limit: str) -> str:
        """The command that raises it (hook._raise_hint)."""
        scope = {"team": "", "member": " --per-member",
                 "project": f" --project {self.scope_name}"}[self.reach]
        if self.kind in MEMBER_LOCAL:
            scope = ""
        what = f"{self.kind} {self.name}" if self.name else self.kind
        mode = "" if self.mode == "block" else f" --mode {self.mode}"
        return f"tokenbudget budget set {what} {limit} --team{scope}{mode}"


def project_of(folder: str | None, projects: dict[str, str]) -> str | None:
    """The team's name for the project of `folder`, as the last sync resolved it."""
    while folder:
        if folder in projects:
            return projects[folder]
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return None


def matches(project: str | None, name: str) -> bool:
    """Does a budget for project `name` (a remote or a repository's name) cover `project`?"""
    if project is None:
        return False
    return project == name or project.endswith("/" + name)


def age(seconds: float) -> str:
    """`12 s`, `5 min`, `3 h`: how old something is."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


STALE_AFTER = 2 * PULL_EVERY  # seconds: older totals mean the syncs are failing; say so


def team_age(data: dict[str, Any] | None, now: float) -> float | None:
    """How old the cached team totals are, in seconds; None when never fetched."""
    fetched = (data or {}).get("fetched")
    return None if fetched is None else max(0.0, now - float(fetched))


def listed(cfg: Any, ledger: dict[str, Any], ctx: Context,
           local: MeasureLocal) -> tuple[list[Check], float | None]:
    """`status` and the status line: the team budgets measured from the cache plus the outbox,
    and how old the cached totals are (None when never fetched). No sync is started."""
    data = read_json(cache_file())
    if not data or data.get("team") != cfg.team["team"]:
        return [], None
    return (measure(data, cfg.team["member"], ledger, ctx, local),
            team_age(data, ctx.now.timestamp()))


def checks(cfg: Any, ledger: dict[str, Any], ctx: Context, event: str,
           now: float, local: MeasureLocal) -> list[Check]:
    """The team budgets measured from the cache plus the outbox; starts a background sync
    when one is due. Called by the engine's judge. Waits on the network only for a prompt near
    a team limit on totals older than FRESH_WITHIN, REFRESH_WAIT at most."""
    data = read_json(cache_file())
    _maybe_sync(ledger, event, now, float((data or {}).get("fetched") or 0))
    if not data or data.get("team") != cfg.team["team"]:
        if cfg.fail_closed:  # the team's budgets are unknown here: this hook cannot decide
            from tokenbudget.errors import TeamError

            raise TeamError(f"team {cfg.team['team']}'s budgets and totals were never fetched"
                            " (a sync has been started)")
        return []
    found = measure(data, cfg.team["member"], ledger, ctx, local)
    fetched = float(data.get("fetched") or 0)
    if event != "UserPromptSubmit" or now - fetched <= FRESH_WITHIN:
        return found
    if all(c.state == "ok" for c in found):
        return found
    fresh = refresh(cfg.team, data)
    if fresh is not None:
        return measure(fresh, cfg.team["member"], ledger, ctx, local)
    return measure(data, cfg.team["member"], ledger, ctx, local, stale=now - fetched)


def refresh(team_cfg: dict[str, str], data: dict[str, Any],
            wait: float = REFRESH_WAIT) -> dict[str, Any] | None:
    """The team's totals and budgets fetched now (and cached), or None when the server did not
    answer within `wait` seconds.

    In a thread that the hook does not wait for beyond `wait`: libpq's connect_timeout is
    whole seconds, 2 at least, and a server may accept and then hang. A thread still running
    when the hook exits dies with it; the cache file is replaced atomically or not at all.
    The wait is a relative timeout on a pipe the thread writes to when done, not a timed join:
    that one waits until a deadline on the monotonic clock, which a shifted clock (a test
    tool's, a VM's) puts days away."""
    import select
    import threading

    from tokenbudget.errors import TeamError

    got: list[dict[str, Any]] = []
    done, told = os.pipe()

    def fetch() -> None:
        from tokenbudget.team import sync

        try:
            with contextlib.suppress(TeamError):
                got.append(sync.pull(team_cfg, dict(data.get("projects") or {}), timeout=wait))
        finally:
            with contextlib.suppress(OSError):  # nobody waits any more
                os.write(told, b".")
            os.close(told)

    worker = threading.Thread(target=fetch, name="tokenbudget-team-refresh", daemon=True)
    worker.start()
    try:
        select.select([done], [], [], wait)
    finally:
        os.close(done)
    return got[0] if got else None


def measure(data: dict[str, Any], member_name: str, ledger: dict[str, Any], ctx: Context,
            local: MeasureLocal, stale: float | None = None) -> list[Check]:
    """Each team budget in `data` (the cache's form) measured: its cached total plus what
    waits in the outbox; the ones each member keeps alone by `local`, from its ledger."""
    if not data.get("budgets"):
        return []
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(str(data.get("timezone") or "UTC"))
    projects: dict[str, str] = data.get("projects") or {}
    here = project_of(ctx.project, projects)
    out: list[Check] = []
    for row in data["budgets"]:
        if row["kind"] in MEMBER_LOCAL:
            continue
        b = TeamBudget(row, stale)
        if b.reach == "project" and not matches(here, b.scope_name):
            continue
        start, end = window(b.kind, ctx.now, zone, int(data.get("week_start") or 0))
        first = "1970-01-01" if start is None else start.astimezone(zone).date().isoformat()
        member = member_name if b.reach == "member" else ""
        cached = 0.0
        for kind, wstart, m, project, tokens, micros in data.get("totals", []):
            if kind != _WINDOWS[b.kind] or wstart != first or m != member:
                continue
            if (project == "") == (b.reach != "project") and (
                b.reach != "project" or matches(project, b.scope_name)
            ):
                cached += tokens if b.unit == "tokens" else micros / 1_000_000
        lo = start.timestamp() if start else float("-inf")
        hi = end.timestamp() if end else float("inf")
        unpushed = 0.0
        for e in ledger["outbox"].values():
            if not lo <= e[OUT_BUCKET] * BUCKET < hi:
                continue
            if b.reach == "project" and not matches(projects.get(e[OUT_PROJECT]), b.scope_name):
                continue
            unpushed += sum(e[OUT_USAGE]) if b.unit == "tokens" else (e[OUT_COST] or 0.0)
        used = max(0.0, cached + unpushed)
        out.append(evaluate(b, used, 0.0, ctx.now, end, f"team {first}"))
    own: list[Budget] = [
        TeamBudget(row, stale) for row in data["budgets"] if row["kind"] in MEMBER_LOCAL
    ]
    if own:  # measured as the member's own budgets are, from its ledger
        out += local(own, ledger, ctx)
    return out


def _maybe_sync(ledger: dict[str, Any], event: str, now: float, fetched: float) -> None:
    """Start `tokenbudget team sync` in the background when usage waits and none ran lately,
    or when the team's totals were fetched more than PULL_EVERY ago."""
    state = read_json(state_file()) or {}
    spawned = float(state.get("spawned") or 0)
    if ledger["outbox"]:
        last = max(float(state.get("last_push") or 0), spawned)
        wait = RETRY_EVERY if state.get("error") else PUSH_EVERY
        if event != "Stop" and now - last < wait:
            return
    elif now - max(fetched, spawned) < (RETRY_EVERY if state.get("error") else PULL_EVERY):
        return
    if now - float(state.get("spawned") or 0) < 1.0:
        return  # one start a second at most, whatever the events
    state["spawned"] = now
    try:
        write_private_json(state_file(), state)
        spawn_sync()
    except OSError:
        pass  # the next hook tries again; the usage waits in the outbox meanwhile


def spawn_sync() -> None:
    """`tokenbudget team sync --background`, detached: its own session, and stdin, stdout and
    stderr on /dev/null (a child holding the hook's stdout open hangs Claude Code).

    posix_spawn, not subprocess: no import on the hook's path, and no Popen object to warn
    that a child it never waits for is still running."""
    null = os.devnull
    os.posix_spawn(
        sys.executable,
        [sys.executable, "-P", "-c", "from tokenbudget.cli import main; main()",
         "team", "sync", "--background"],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0),
        ],
        setsid=True,
    )
