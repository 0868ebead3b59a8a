"""The expected failures: each reaches the user as one line, never a traceback."""


class TokenbudgetError(Exception):
    """Base of every failure we expect and can explain in one line."""


class ConfigError(TokenbudgetError):
    """The budget config file cannot be read or is invalid."""


class LedgerError(TokenbudgetError):
    """The ledger cannot be read or written."""


class CorruptLedger(LedgerError):
    """The ledger file exists but cannot be used as it is."""


class LockTimeout(LedgerError):
    """The ledger lock was not obtained within its bound."""


class SettingsError(TokenbudgetError):
    """A Claude Code settings file cannot be read or written."""


class TeamError(TokenbudgetError):
    """The team database cannot be reached or used, or team mode is not set up."""
