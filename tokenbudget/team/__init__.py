"""Team budgets across machines, on PostgreSQL (the `team` extra).

Nothing here is imported by a hook call: psycopg alone costs a process about 100 ms. A hook
reads the team's totals and budgets from the small cache file that `tokenbudget team sync`
writes (`cache.py`, which imports no database code); only the CLI and that sync talk to the
server.
"""
