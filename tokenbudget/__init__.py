"""tokenbudget: exact token and dollar budgets for Claude Code."""

__version__ = "0.1.0"
