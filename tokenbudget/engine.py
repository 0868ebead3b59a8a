"""The one budget decision: measure every budget, decide what an event meets, say why.

measure -> decide -> message. The hook, `status`, `status --check`, the status line, doctor and
the HTML report all ask here, so none of them can disagree on what a budget does. No I/O and
no clock: the ledger (the dict the store gives), the budgets and the moment come in; checks, a
`Decision` and its sentences (from `messages`) go out. What a decision reads and records
beside the usage (a turn's usage, a command's runs, warnings given, `tokenbudget allow`) it
asks of the ledger's Store (store.held: the one ledger read it decides on); what it records
comes back as data, which `remember` writes through that Store into the ledger the caller
holds in its transaction.
"""

from __future__ import annotations

from datetime import datetime

from tokenbudget import budgets as rules
from tokenbudget import enforce
from tokenbudget.enforce import Context as Context
from tokenbudget.record import Frozen
from tokenbudget.schema import S_PROJECT
from tokenbudget.store import ALLOW_TTL as ALLOW_TTL
from tokenbudget.store import MAX_WARNED as MAX_WARNED
from tokenbudget.store import held

TYPE_CHECKING = False  # typing costs a hook call about 5 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import tzinfo
    from typing import Any, Literal, TypeAlias

    from tokenbudget.budgets import Budget, Check
    from tokenbudget.config import Config
    from tokenbudget.ledger import Ledger
    from tokenbudget.store import Store

    Action: TypeAlias = Literal["allow", "refuse", "stop"]

PROMPT = "UserPromptSubmit"  # the event whose answer can refuse a prompt
STOPPING = ("PreToolUse", "PostToolUse", "PostToolBatch")  # events whose answer can end a turn
# The plugin's /tokenbudget skill (typed bare or namespaced): it runs the CLI, so refusing it
# would leave no way to raise a used-up budget from inside Claude Code.
OWN_COMMANDS = ("/tokenbudget", "/tokenbudget:tokenbudget")


# ---------------------------------------------------------------- where and when


def command_of_prompt(prompt: str | None) -> str:
    """`/test --fast` is `/test`; anything else is `prompt` (the same rule as the ledger's)."""
    return (rules.slash_command(prompt) if prompt else None) or "prompt"


def context(
    cfg: Config,
    now: float,
    *,
    session_id: str | None = None,
    project: str | None = None,
    command: str | None = None,
    prompt_id: str | None = None,
    starting: bool = False,
    listing: bool = False,
) -> Context:
    """Where and when to measure, in the configured time zone and week."""
    tz = cfg.tz()
    return Context(
        session_id=session_id,
        project=project,
        now=datetime.fromtimestamp(now, tz),
        tz=tz,
        week_start=cfg.week_start,
        command=command,
        prompt_id=prompt_id,
        starting=starting,
        listing=listing,
    )


def event_context(
    event: str,
    ledger: Ledger,
    cfg: Config,
    now: float,
    *,
    session_id: str | None,
    cwd: str | None,
    prompt: str | None = None,
    prompt_id: str | None = None,
) -> Context:
    """Where a hook event (or the status line) is measured: in its cwd, else the folder its
    session started in. A prompt carries its command (whose expected cost counts); any other
    event, the command of the turn it runs in."""
    session = ledger["sessions"].get(session_id or "")
    starting = event == PROMPT
    command = command_of_prompt(prompt) if starting else None
    if not starting:
        command, _tokens, _cost = (
            held(ledger).turn_usage(session_id, prompt_id) or (None, 0, 0)
        )
    return context(
        cfg,
        now,
        session_id=session_id,
        project=cwd or (session[S_PROJECT] if session else None),
        command=command,
        prompt_id=prompt_id,
        starting=starting,
    )


def exempt(event: str, ctx: Context) -> bool:
    """A prompt no budget refuses or warns about: the plugin's own /tokenbudget command."""
    return event == PROMPT and ctx.command in OWN_COMMANDS


# ---------------------------------------------------------------- measure


def measure(budgets: Iterable[Budget], ledger: Ledger, ctx: Context) -> list[Check]:
    """Every budget that applies in `ctx`, measured; each check names the window it measured.

    A prompt about to start (`ctx.starting`) counts its command's expected cost: the 90th
    percentile of its recent runs, in the budget's own unit.
    """
    expected = (
        enforce.expected(ledger, ctx.command, exclude=ctx.prompt_id)
        if ctx.starting
        else (0.0, 0.0)
    )
    checks = []
    for b in budgets:
        if not enforce.applies(b, ctx):
            continue
        used, resets, window = enforce.measure(b, ledger, ctx)
        cost = expected[1] if b.unit == "usd" else expected[0]
        checks.append(rules.evaluate(b, used, cost, ctx.now, resets, window))
    return checks


def outlook(checks: Iterable[Check]) -> rules.Decision:
    """What a prompt would meet, whatever was already warned about or allowed: block, warn
    or allow, the furthest over first (doctor)."""
    return rules.decide(checks)


def used_up(checks: Iterable[Check]) -> list[Check]:
    """The blocking budgets used up here, that would refuse the next prompt whatever it is: a
    command budget is not among them (each run of a command starts from zero)."""
    return [c for c in checks if c.blocks and c.state == "over" and c.budget.kind != "command"]


def summary(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Checks as plain data, for `status --json` and `status --check --json`."""
    rows = []
    for c in checks:
        rows.append(
            {
                "budget": c.budget.id,
                "kind": c.budget.kind,
                "name": c.budget.name,
                "project": c.budget.project,
                "unit": c.budget.unit,
                "mode": c.budget.mode,
                "limit": c.limit,
                "used": c.used,
                "remaining": max(0.0, c.limit - c.used),
                "fraction": c.fraction,
                "resetsAt": c.resets_at.isoformat() if c.resets_at else None,
                "state": c.state,
                "blocksNow": c.blocks,
                "source": c.budget.source,
            }
        )
    return rows


# ---------------------------------------------------------------- decide


class Decision(Frozen):
    """What an event meets, and what to record for it."""

    _fields = ("action", "check", "warnings", "warned", "allow", "let_through", "now",
               "session_id")
    __slots__ = _fields
    action: Action  # refuse the prompt, stop the turn, or allow (with any warnings)
    check: Check | None  # the budget a refusal or stop names
    warnings: tuple[Check, ...]  # budgets to warn about now (each once per window and level)
    warned: tuple[str, ...]  # their warn keys, to record
    allow: dict[str, Any] | None  # the `tokenbudget allow` state to record; None: unchanged
    let_through: bool  # a prompt the budgets refuse, let through once by `tokenbudget allow`
    now: float
    session_id: str | None

    def __init__(
        self,
        action: Action,
        check: Check | None = None,
        warnings: tuple[Check, ...] = (),
        warned: tuple[str, ...] = (),
        allow: dict[str, Any] | None = None,
        let_through: bool = False,
        now: float = 0.0,
        session_id: str | None = None,
    ) -> None:
        self._set(action=action, check=check, warnings=warnings, warned=warned, allow=allow,
                  let_through=let_through, now=now, session_id=session_id)

    @property
    def records(self) -> bool:
        """Whether deciding changed what the ledger must hold."""
        return bool(self.warned) or self.allow is not None


def _check_key(check: Check) -> str:
    return f"{check.budget.id}|{check.budget.unit}"


def decide(
    event: str,
    checks: list[Check],
    state: Store,
    *,
    now: float,
    session_id: str | None,
    prompt_id: str | None,
) -> Decision:
    """Refuse a prompt, stop a turn, or allow it with the warnings not given yet.

    A prompt is refused when a blocking budget is used up or its command's expected cost would
    pass one; a turn is stopped at the first tool event that sees a blocking budget used up
    (before the tool of the crossing response, or after its batch of tools), before its next
    request. `tokenbudget allow` (granted within ALLOW_TTL: `state.allow_state()`) lets one
    refused prompt through; its turn may use one more budget's worth, then it is stopped too.
    Warnings come once per budget, window and level. `state`: the Store of the ledger decided
    on, read and never changed here (`remember` records the decision).
    """
    starting = event == PROMPT
    allow = state.allow_state()
    decision = rules.decide(checks)
    allowed = False
    new_allow = None
    if decision.action == "block":
        if starting and allow.get("pending") and now - float(allow.get("at", 0)) < ALLOW_TTL:
            # Spent only on a prompt it actually lets through. What each budget had used is
            # remembered: the turn it lets through is itself bounded.
            allowed = True
            new_allow = {
                "session": session_id,
                "prompt_id": prompt_id,
                "at": now,
                "base": {_check_key(c): c.used for c in checks},
            }
        elif (
            not starting
            and prompt_id
            and allow.get("session") == session_id
            and allow.get("prompt_id") == prompt_id
        ):
            base = allow.get("base", {})
            again = [
                c for c in checks if c.blocks and c.used - base.get(_check_key(c), 0.0) >= c.limit
            ]
            allowed = not again
            if again:
                decision = rules.decide(again)
    primary = decision.primary
    refusing = starting or (event in STOPPING and primary is not None and primary.state == "over")
    if decision.action == "block" and not allowed and primary is not None and refusing:
        return Decision(
            "refuse" if starting else "stop", primary, now=now, session_id=session_id
        )
    warnings: list[Check] = []
    keys: list[str] = []
    for c in checks:
        if c.state == "ok":
            continue
        key = rules.warn_key(c.budget, c.window, "over" if c.state == "over" else "warn")
        if key in keys or state.first_warning(key) is not None:
            continue
        warnings.append(c)
        keys.append(key)
    return Decision(
        "allow",
        None,
        tuple(warnings),
        tuple(keys),
        new_allow,
        allowed and starting,
        now,
        session_id,
    )


def remember(ledger: Ledger, decision: Decision) -> None:
    """Record what `decision` gave: its warnings (the oldest forgotten past MAX_WARNED) and the
    `tokenbudget allow` it spent."""
    state = held(ledger)
    state.record_warnings(decision.warned, decision.now)
    if decision.allow is not None:
        a = decision.allow
        state.take_allow(a["session"], a["prompt_id"], a["base"], a["at"])


def judge(
    event: str,
    budgets: Iterable[Budget],
    ledger: Ledger,
    cfg: Config,
    now: float,
    *,
    session_id: str | None,
    cwd: str | None,
    prompt: str | None,
    prompt_id: str | None,
) -> tuple[Context, list[Check], Decision] | None:
    """A hook event measured and decided; None when no budget concerns it."""
    ctx = event_context(event, ledger, cfg, now, session_id=session_id, cwd=cwd, prompt=prompt,
                        prompt_id=prompt_id)
    if exempt(event, ctx):
        return None
    checks = measure(budgets, ledger, ctx)
    if cfg.team is not None:  # the team's budgets, from its cached totals (team/cache.py)
        from tokenbudget.team import cache

        checks += cache.checks(cfg, ledger, ctx, event, now, measure)
    decision = decide(event, checks, held(ledger), now=now, session_id=session_id,
                      prompt_id=prompt_id)
    return ctx, checks, decision


# ---------------------------------------------------------------- message


def reason(decision: Decision, ledger: Ledger, tz: tzinfo) -> str:
    """What a refused prompt or stopped turn is told, with the budget's burn rate."""
    from tokenbudget import burn, messages

    check = decision.check
    if check is None:
        raise ValueError("only a refusal or a stop has a reason")
    rate = burn.last_hour(ledger, check.budget, decision.now, decision.session_id)
    return messages.refusal(check, rate, tz)


def notes(decision: Decision, ledger: Ledger, tz: tzinfo) -> list[str]:
    """The lines an allowed event shows: each new warning, and the allow note."""
    if not decision.warnings and not decision.let_through:
        return []
    from tokenbudget import burn, messages

    lines = []
    for c in decision.warnings:
        rate = burn.last_hour(ledger, c.budget, decision.now, decision.session_id)
        lines.append(messages.warning(c, rate, tz))
    if decision.let_through:
        lines.append(messages.ALLOW_NOTE)
    return lines


def context_hint(checks: Iterable[Check]) -> str:
    """What the model is told about what each budget has left ('' if none)."""
    from tokenbudget import messages

    return messages.context_hint(checks)
