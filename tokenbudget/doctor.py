"""`tokenbudget doctor`: what is installed where, and whether it works; each problem with a fix."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenbudget import claude_settings, clock, paths, plugin
from tokenbudget.errors import TokenbudgetError


@dataclass
class Finding:
    ok: bool
    title: str
    detail: str = ""
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "title": self.title, "detail": self.detail, "fix": self.fix}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, ok: bool, title: str, detail: str = "", fix: str = "") -> None:
        self.findings.append(Finding(ok, title, detail, fix))

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


def interpreter_runs(python: str) -> tuple[bool, str]:
    """Whether `python` can run our hooks as they are registered (with -P, Python 3.11+, which
    keeps the working directory off sys.path: a tokenbudget folder there proves nothing)."""
    try:
        proc = subprocess.run(
            [python, "-P", "-c", "import tokenbudget.hook, sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        # A traceback ends with the error; a usage error ("Unknown option: -P") comes first.
        said = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
        return False, said or "it exited with an error"
    return True, f"Python {proc.stdout.strip()}"


def _starts(command: list[str], expect: str | None = None) -> tuple[bool, str]:
    """Whether `command` runs (exit 0, and prints `expect` if given): (ok, its path or why)."""
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{command[0]}: {e}"
    if proc.returncode != 0 or (expect is not None and proc.stdout.strip() != expect):
        last = (proc.stderr.strip().splitlines() or [f"it exited {proc.returncode}"])[-1]
        return False, f"{command[0]}: {last}"
    return True, command[0]


def _portable_hook_runs() -> tuple[bool, str]:
    """Whether `tokenbudget-hook`, which a project's shared settings run, is on PATH and runs."""
    found = shutil.which(claude_settings.PORTABLE_HOOK)
    if found is None:
        return False, f"{claude_settings.PORTABLE_HOOK} is not on PATH"
    # No event and no input: the hook answers "{}" and touches nothing, proving it starts.
    return _starts([found], expect="{}")


def _settings_files(project_dir: Path) -> Iterator[tuple[str, Path]]:
    """Each scope's settings file, once: in the home folder, the project's is the user's."""
    try:
        yield from claude_settings.settings_files(project_dir)
    except TokenbudgetError:
        return


def plugin_registrations(project_dir: Path | None = None) -> list[str]:
    """Where Claude Code has tokenbudget enabled as a plugin (settings' enabledPlugins)."""
    found = []
    for scope, path in _settings_files(project_dir or Path.cwd()):
        try:
            data = claude_settings.read_settings(path)
        except TokenbudgetError:
            continue
        enabled = data.get("enabledPlugins")
        if isinstance(enabled, dict):
            for key, on in enabled.items():
                if isinstance(key, str) and key.split("@")[0] == "tokenbudget" and on:
                    found.append(f"{scope} settings ({path}): plugin {key}")
    return found


def plugin_runs() -> dict[str, dict[str, Any]]:
    """The plugin folders our hooks ran from lately (`claude --plugin-dir` too) that still exist."""
    return {r: v for r, v in plugin.recent_runs(clock.now()).items() if os.path.isdir(r)}


def _plugin_cli_runs(script: Path) -> tuple[bool, str]:
    """Whether the plugin environment's `tokenbudget` command starts (its shebang is right)."""
    return _starts([str(script), "--version"])


def check_plugin_run(report: Report, root: str, run: dict[str, Any]) -> None:
    """A plugin our hooks ran from: when, and whether its interpreter and command work."""
    from datetime import datetime

    when = datetime.fromtimestamp(float(run["at"]), _zone()).strftime("%Y-%m-%d %H:%M")
    report.add(True, "hooks ran as a plugin", f"{root}: last session start {when}")
    python = run.get("python")
    if isinstance(python, str):
        runs, detail = interpreter_runs(python)
        report.add(
            runs,
            "plugin hook interpreter runs",
            f"{python}: {detail}",
            "" if runs else "start a Claude Code session with the plugin: it sets up again",
        )
    data = run.get("data")
    script = Path(data) / "venv" / "bin" / "tokenbudget" if isinstance(data, str) else None
    if script is not None and script.parent.parent.exists():
        runs, detail = _plugin_cli_runs(script)
        report.add(
            runs,
            "plugin's tokenbudget command runs",
            detail,
            ""
            if runs
            else "start a Claude Code session with the plugin: its hooks rebuild the "
            "environment in the background",
        )


def check_hooks(report: Report, project_dir: Path) -> None:
    registered = 0
    for scope, path in _settings_files(project_dir):
        if not path.exists():
            continue
        try:
            regs = claude_settings.find_registrations(path)
        except TokenbudgetError as e:
            report.add(
                False,
                f"{scope} settings cannot be read",
                str(e),
                f"fix the JSON in {path}; tokenbudget never rewrites a file it cannot parse",
            )
            continue
        if not regs:
            continue
        registered += 1
        events = sorted({r.event for r in regs})
        missing = sorted(set(claude_settings.OUR_EVENTS) - set(events))
        # An older version's (PreToolUse: a process on every tool call): an install removes it.
        extra = sorted(set(events) - set(claude_settings.OUR_EVENTS))
        why = [f"missing {', '.join(missing)}"] if missing else []
        why += [f"no longer needed: {', '.join(extra)}"] if extra else []
        # Whether Claude Code waits for a hook depends on the layout too (SessionStart is async
        # with the resident answerer's http hooks, waited for without them).
        layout = any(r.command.startswith("http://") for r in regs)
        flip = sorted({r.event for r in regs if r.event in claude_settings.OUR_EVENTS
                       and r.is_async != claude_settings.is_async(r.event, layout)})
        why += [f"{e} {'not ' if claude_settings.is_async(e, layout) else ''}to be waited for"
                for e in flip]
        again = f"tokenbudget install{' --resident' if layout else ''} --scope {scope}"
        report.add(
            not why,
            f"hooks registered in {scope} settings",
            f"{path}: {', '.join(events)}",
            f"run `{again}` ({'; '.join(why)})" if why else "",
        )
        forms = {claude_settings.hook_form(r.command) for r in regs}
        pythons = sorted({py for r in regs if (py := claude_settings.interpreter_of(r.command))})
        for py in pythons:
            runs, detail = interpreter_runs(py)
            report.add(
                runs,
                f"hook interpreter runs ({scope})",
                f"{py}: {detail}",
                ""
                if runs
                else f"reinstall: `tokenbudget install --scope {scope}` from a working tokenbudget",
            )
        quick = {
            (parsed.python, parsed.paths)
            for r in regs
            if (parsed := claude_settings.parse_hook_command(r.command)) is not None
            and parsed.python is not None
            and parsed.paths is not None
        }
        for py, folders in sorted(quick):
            runs, detail = claude_settings.quick_start_runs(py, folders)
            report.add(
                runs,
                f"hooks find tokenbudget without site ({scope})",
                f"{py} -I -S: {detail}",
                ""
                if runs
                else f"reinstall: `tokenbudget install --scope {scope}` (a folder it names moved)",
            )
        if "portable" in forms:
            runs, detail = _portable_hook_runs()
            report.add(
                runs,
                f"tokenbudget-hook runs ({scope}: found on PATH)",
                detail,
                ""
                if runs
                else "install tokenbudget so that `tokenbudget-hook` is on the PATH Claude Code "
                f"gets (pipx install, or ./install.sh), or `tokenbudget install --scope {scope} "
                "--python PATH`",
            )
        if "plugin" in forms:
            # ${CLAUDE_PLUGIN_ROOT} is only set for a plugin's own hooks: here it is empty.
            report.add(
                False,
                f"plugin hook command in {scope} settings",
                f"{path}: it only works from the plugin's hooks.json",
                f"run `tokenbudget install --scope {scope}` to replace it",
            )
    plugins = plugin_registrations(project_dir)
    for p in plugins:
        report.add(True, "registered as a plugin", p)
    ran = plugin_runs()
    for root, run in ran.items():
        check_plugin_run(report, root, run)
    if not registered and not plugins and not ran:
        report.add(
            False,
            "hooks are not registered anywhere",
            "no settings file or plugin has them, and no plugin's hooks ran in the last "
            f"{plugin.KEEP_DAYS} days",
            "run `tokenbudget install` (or ./install.sh), or use the plugin",
        )
    elif plugins and not ran and not registered:
        # Enabled, but its hooks have not set up their environment yet: nothing is enforced.
        report.add(
            False,
            "the plugin's hooks have not run yet",
            f"no session start from it in the last {plugin.KEEP_DAYS} days",
            "start a Claude Code session: the plugin sets up its Python environment on first"
            " use (about a minute; it allows everything until then), then run doctor again",
        )
    elif registered and (plugins or ran):
        report.add(
            True,
            "registered both in settings and as a plugin",
            "each event is answered once either way",
        )


def check_ledger(report: Report) -> None:
    from tokenbudget.ledger import CorruptLedger
    from tokenbudget.store import open_store

    path = paths.ledger_path()
    if not path.exists():
        report.add(
            True,
            "ledger",
            f"{path}: not created yet (the first hook or `tokenbudget sync` creates it)",
        )
    else:
        store = open_store(path=path)
        counts: tuple[int, int, int] | None = None
        try:
            counts = store.view().ledger_counts()
        except CorruptLedger as e:
            report.add(
                False,
                "ledger is corrupt",
                f"{path}: {e}",
                "run `tokenbudget rebuild` (the bad file is kept aside)",
            )
        except TokenbudgetError as e:
            report.add(False, "ledger cannot be read", str(e), "check the file's owner and mode")
        if counts is not None:
            live, folded, tracked = counts
            size = path.stat().st_size
            report.add(
                size <= 4 * 1024 * 1024,
                "ledger",
                f"{path}: {size / 1024:.0f} KiB, {live} live session(s), {folded} folded, "
                f"{tracked} transcript(s) tracked",
                ""
                if size <= 4 * 1024 * 1024
                else "lower retention_days in the config, then `tokenbudget sync`",
            )
        mode = path.stat().st_mode & 0o777
        report.add(
            mode & 0o077 == 0,
            "ledger is private",
            f"mode {mode:o}",
            "" if mode & 0o077 == 0 else f"chmod 600 {path}",
        )
    lock = path.with_name(path.name + ".lock")
    holder = _lock_holder(lock)
    report.add(
        holder is None,
        "ledger lock is free" if holder is None else "ledger lock is held",
        "" if holder is None else f"held by {holder}",
        "" if holder is None else "if that process is stuck, end it; hooks allow meanwhile",
    )


def _lock_holder(lock: Path) -> str | None:
    if not lock.exists():
        return None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                import importlib

                lockinfo = importlib.import_module("tokenbudget.lockinfo")
                return str(lockinfo.holder(lock) or "another process")
            except Exception:
                return "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_claude_dirs(report: Report) -> None:
    """Where Claude Code keeps its transcripts; none yet only means it has not run yet."""
    parts: list[str] = []
    transcripts = 0
    unreadable = False
    for d in paths.claude_config_dirs():
        projects = d / "projects"
        # os.path answers False on any OSError, where Path.is_dir raises on EACCES.
        if os.path.isdir(projects):
            try:
                n = sum(1 for _ in projects.glob("*/*.jsonl"))
            except OSError as e:
                unreadable = True
                parts.append(f"{projects} cannot be read ({e.strerror or e})")
                continue
            transcripts += n
            parts.append(f"{projects}: {n} session transcript(s)")
        elif os.path.isdir(d):
            parts.append(f"{d} exists, with no projects/ in it")
        else:
            parts.append(f"{d} does not exist")
    detail = "; ".join(parts)
    if not transcripts and not unreadable:
        # A fresh install before Claude Code's first session: nothing is wrong, nothing to count.
        detail = (
            "no transcripts yet (Claude Code writes them once it runs; if it keeps its data "
            f"elsewhere, set CLAUDE_CONFIG_DIR): {detail}"
        )
    report.add(
        not unreadable,
        "Claude Code data dirs",
        detail,
        "" if not unreadable else "give your user read access to Claude Code's projects/ folder",
    )


def check_config(report: Report, project_dir: Path) -> Any:
    from tokenbudget import config

    try:
        cfg = config.load_config()
    except TokenbudgetError as e:
        report.add(False, "config is broken", str(e), f"fix or remove {paths.config_path()}")
        return None
    try:
        budgets = config.effective_budgets(cfg, project_dir)
    except TokenbudgetError as e:
        report.add(False, "project budget file is broken", str(e), "fix .claude/tokenbudget.json")
        return None
    report.add(
        True,
        "config",
        f"{paths.config_path()}: {len(budgets)} budget(s) apply here"
        + (", fail_closed" if cfg.fail_closed else ""),
    )
    return cfg, budgets


def check_prompt(report: Report, cfg: Any, budgets: list[Any], project_dir: Path) -> None:
    from tokenbudget import engine, sync
    from tokenbudget.numfmt import format_percent

    try:
        ledger = sync.open_store().snapshot()
    except TokenbudgetError:
        return
    ctx = engine.event_context(engine.PROMPT, ledger, cfg, clock.now(), session_id=None,
                               cwd=str(project_dir), prompt="")
    decision = engine.outlook(engine.measure(budgets, ledger, ctx))
    detail: str = decision.action
    if decision.primary is not None:
        c = decision.primary
        detail += f" ({c.budget.id}: {format_percent(c.fraction)} used)"
    report.add(True, "a prompt here now would meet", detail)


def _zone() -> Any:
    """The zone times are shown in: the config's (as every command shows them), or the
    system's while the config is broken (check_config says what is wrong with it)."""
    from tokenbudget import config

    try:
        return config.load_config().tz()
    except TokenbudgetError:
        return config.local_zone()


def check_resident(report: Report) -> None:
    """The resident answerer, when installed: running or not, pid, since when, events answered,
    the last error."""
    from tokenbudget import resident

    setup = resident.load()
    if setup is None:
        if os.path.exists(resident.key_file()):
            report.add(False, "the resident answerer must be installed again",
                       f"{resident.key_file()}: its key file is of an older tokenbudget or"
                       " cannot be read; tool batches are not checked",
                       "run `tokenbudget install --resident` again")
        return
    found, info = resident.probe(setup)
    where = f"127.0.0.1:{setup.port}"
    if found == "stranger":
        report.add(False, "the resident answerer's port is held by another process",
                   f"{where}: {info.get('why', '')}; prompts are refused until it is free",
                   "run `tokenbudget install --resident` again for a new port and key")
        return
    if resident.exposed(setup):
        report.add(False, "the resident answerer's key may be known to another process",
                   f"{where}: another process held the port while this key was in use, and"
                   " was sent it with tool events",
                   "run `tokenbudget install --resident` again for a new port and key")
    state = info if found == "ours" else resident.read_state()
    last = state.get("last_error") or "none"
    if found == "ours":
        from datetime import datetime

        since = datetime.fromtimestamp(float(state["started"]), _zone()).strftime(
            "%Y-%m-%d %H:%M:%S")
        detail = (f"pid {state['pid']} on {where} since {since}, answered "
                  f"{state['answered']} event(s); last error: {last}")
        report.add(True, "resident answerer running", detail)
    else:
        start = state.get("start_error")
        report.add(True, "resident answerer not running",
                   f"{where}: the next session or prompt starts it; last error: {last}"
                   + (f"; its last start failed: {start}" if start else ""))


def check_resident_hooks(report: Report, project_dir: Path) -> None:
    """Each settings file whose http hooks send where the answerer is not (another port or
    key, or no answerer installed): their events are refused or lost, and go unchecked."""
    from tokenbudget import resident

    setup = resident.load()
    files = list(_settings_files(project_dir))
    seen = {os.path.realpath(path) for _, path in files}
    # Every file install --resident wrote http hooks into, in whatever project it is.
    files += [("recorded", Path(p)) for p in resident.senders() if os.path.realpath(p) not in seen]
    for scope, path in files:
        try:
            targets = claude_settings.http_targets(path)
        except TokenbudgetError:
            continue  # check_hooks says it cannot be read
        if not targets or (setup is not None and targets == {(setup.port, setup.key)}):
            continue
        ports = ", ".join(f"127.0.0.1:{port}" for port in sorted({p for p, _ in targets}))
        if setup is None:
            why = ", but the resident answerer is not installed"
        elif {p for p, _ in targets} != {setup.port}:
            why = f", but the answerer is on 127.0.0.1:{setup.port}"
        else:
            why = " with a key that is not the answerer's"
        where = (f"--scope {scope}" if scope != "recorded"
                 else f"--settings {shlex.quote(str(path))}")
        report.add(False, f"http hooks in {scope} settings do not reach the resident answerer",
                   f"{path}: PostToolBatch and Stop go to {ports}{why}; those events are not"
                   " checked",
                   f"run `tokenbudget install --resident {where}` (or `tokenbudget"
                   f" install {where}` for command hooks)")


def run(project_dir: Path) -> Report:
    report = Report()
    check_hooks(report, project_dir)
    check_resident(report)
    check_resident_hooks(report, project_dir)
    check_claude_dirs(report)
    loaded = check_config(report, project_dir)
    check_ledger(report)
    if loaded is not None:
        check_prompt(report, loaded[0], loaded[1], project_dir)
        if loaded[0].team is not None:
            from tokenbudget.team.commands import doctor_findings

            for finding in doctor_findings(dict(loaded[0].team), clock.now()):
                report.add(*finding)
    return report


def render(report: Report) -> str:
    """The findings as text; paths and error messages in them have their controls escaped."""
    from tokenbudget.render import escape_controls

    lines = []
    for f in report.findings:
        mark = "ok " if f.ok else "!! "
        detail = escape_controls(f.detail)
        lines.append(f"{mark} {f.title}" + (f": {detail}" if detail else ""))
        if f.fix and not f.ok:
            lines.append(f"    fix: {escape_controls(f.fix)}")
    lines.append(
        "All good." if report.ok else "Something needs attention (see the lines marked !!)."
    )
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(
        {"ok": report.ok, "findings": [f.to_json() for f in report.findings]}, indent=2
    )
