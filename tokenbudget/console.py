"""What the commands share: text safe for the terminal, the config for reading, and recording
what is new in the transcripts before a command answers. Used by cli.py and the team commands,
which sit beside it, not below it."""

from __future__ import annotations

from typing import Any

import click

from tokenbudget.errors import ConfigError


def config_for_reading() -> Any:
    """The config, or the defaults with one warning line when it is broken.

    `report` and `sync` need no budgets: a typo in config.json must not hide the usage.
    """
    from tokenbudget import config

    try:
        return config.load_config()
    except ConfigError as e:
        click.echo(
            f"tokenbudget: warning: the config is broken ({shown(str(e))}); "
            "using the default settings",
            err=True,
        )
        return config.Config()


def shown(text: str) -> str:
    """Text naming transcripts, folders or commands, safe to print on a terminal."""
    from tokenbudget.render import escape_controls

    return escape_controls(text)


def notices(lines: list[str]) -> None:
    """Notes the ledger kept for the user, one per line on stderr."""
    for n in lines:
        click.echo(shown(n), err=True)


def record_new(cfg: Any, quiet: bool = True, wait: float = 30.0, reading: bool = False) -> Any:
    """Record what is new in every transcript; (store, sync report). Waits up to `wait` s
    for the ledger's lock: a command, unlike a hook, can afford to. `reading`: for a command
    that only reads, which writes nothing when there is neither a ledger nor a transcript."""
    from tokenbudget import sync

    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, wait))
    if reading and not store.exists() and sync.nothing_to_read():
        # A machine with no history yet: the empty ledger answers, and a command that only
        # reads leaves no ledger, lock or hot copy behind.
        return store, sync.SyncReport()
    report = sync.sync_all(
        store, prices=cfg.prices, retention_days=cfg.retention_days, tz=cfg.tz()
    )
    notices(report.notices)
    if not quiet:
        for err in report.errors[:5]:
            click.echo(f"tokenbudget: skipped {shown(str(err))}", err=True)
    return store, report
