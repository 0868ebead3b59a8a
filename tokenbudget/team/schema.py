"""The team database's schema: ordered, named migrations, each recorded once applied.

Everything lives in the `tokenbudget` schema of the database the DSN names. The missing steps
run in one transaction that also records them, under an advisory lock, so two `team init` at
once apply each step once and a failed step leaves the database as it was. A database
migrated by a newer tokenbudget (a step this one does not know) is refused, never changed.

The usage table holds one row per request (the ledger's own key: message id + request id) or
per correction of Claude Code's totals (a hidden compaction, say), per team. A push is an
upsert that keeps the larger usage, the local counting rule, so a repeated push changes
nothing; statement triggers add each push's changes, summed per window, member and project,
to the rollups in the same transaction (m007; a row trigger before it), so a team total is one
indexed row. Pushes of one team take one advisory lock: the rollup rows
they all update would otherwise be locked in different orders (deadlocks).
"""

from __future__ import annotations

from typing import Any

LOCK_ID = 7_413_265_001  # pg_advisory_xact_lock key of `team init`

M001_TEAMS_AND_USAGE = """
CREATE TABLE tokenbudget.teams (
    name text PRIMARY KEY CHECK (name <> ''),
    timezone text NOT NULL DEFAULT 'UTC',
    week_start smallint NOT NULL DEFAULT 0 CHECK (week_start BETWEEN 0 AND 6),
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tokenbudget.usage (
    team text NOT NULL REFERENCES tokenbudget.teams (name) ON DELETE CASCADE,
    request_key text NOT NULL,
    member text NOT NULL,
    machine text NOT NULL,
    session text NOT NULL,
    project text NOT NULL,
    model text NOT NULL,
    command text NOT NULL,
    at timestamptz NOT NULL,
    day date NOT NULL,
    input bigint NOT NULL,
    output bigint NOT NULL,
    cache_write bigint NOT NULL,
    cache_read bigint NOT NULL,
    cost_micros bigint NOT NULL,
    pushed timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team, request_key)
);
CREATE INDEX usage_team_day ON tokenbudget.usage (team, day);
"""

# Windows: 'day', 'week', 'month' start on their first day in the team's zone; 'total' on
# 1970-01-01. member and project are '' in the rows that sum over all of them.
M002_ROLLUPS = """
CREATE TABLE tokenbudget.rollups (
    team text NOT NULL REFERENCES tokenbudget.teams (name) ON DELETE CASCADE,
    window_kind text NOT NULL CHECK (window_kind IN ('day', 'week', 'month', 'total')),
    window_start date NOT NULL,
    member text NOT NULL,
    project text NOT NULL,
    tokens bigint NOT NULL,
    cost_micros bigint NOT NULL,
    PRIMARY KEY (team, window_kind, window_start, member, project)
);

CREATE FUNCTION tokenbudget.window_starts(d date, week_start smallint)
RETURNS TABLE (window_kind text, window_start date) LANGUAGE sql IMMUTABLE AS $$
    VALUES ('day', d),
           ('week', d - ((extract(isodow FROM d)::int - 1 - week_start + 7) % 7)),
           ('month', date_trunc('month', d)::date),
           ('total', DATE '1970-01-01')
$$;

CREATE FUNCTION tokenbudget.add_to_rollups() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = tokenbudget, pg_temp AS $$
DECLARE
    d_tokens bigint := NEW.input + NEW.output + NEW.cache_write + NEW.cache_read;
    d_cost bigint := NEW.cost_micros;
    ws smallint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        d_tokens := d_tokens - (OLD.input + OLD.output + OLD.cache_write + OLD.cache_read);
        d_cost := d_cost - OLD.cost_micros;
        IF OLD.day <> NEW.day OR OLD.member <> NEW.member OR OLD.project <> NEW.project THEN
            RAISE EXCEPTION 'a usage row keeps its day, member and project';
        END IF;
    END IF;
    IF d_tokens = 0 AND d_cost = 0 THEN
        RETURN NULL;
    END IF;
    SELECT week_start INTO ws FROM teams WHERE name = NEW.team;
    INSERT INTO rollups AS r (team, window_kind, window_start, member, project, tokens,
                              cost_micros)
    SELECT NEW.team, w.window_kind, w.window_start, s.member, s.project, d_tokens, d_cost
    FROM window_starts(NEW.day, ws) AS w,
         (VALUES ('', ''), (NEW.member, ''), ('', NEW.project)) AS s (member, project)
    ORDER BY 2, 3, 4, 5
    ON CONFLICT (team, window_kind, window_start, member, project) DO UPDATE
        SET tokens = r.tokens + excluded.tokens,
            cost_micros = r.cost_micros + excluded.cost_micros;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_rollups AFTER INSERT OR UPDATE ON tokenbudget.usage
    FOR EACH ROW EXECUTE FUNCTION tokenbudget.add_to_rollups();
"""

# One call per batch: rows as a JSON array of objects (see db.push). Keys are deduplicated
# (the larger usage wins) and sorted, so no statement meets its own row twice and every push
# takes its row locks in the same order; the day comes from the team's zone. Usage of no
# project is '(no project)': '' marks the rollup rows of all projects.
M003_PUSH = """
CREATE FUNCTION tokenbudget.push(p_team text, p_rows jsonb) RETURNS integer
LANGUAGE plpgsql SET search_path = tokenbudget, pg_temp AS $$
DECLARE
    zone text;
    changed integer;
BEGIN
    SELECT timezone INTO zone FROM teams WHERE name = p_team;
    IF zone IS NULL THEN
        RAISE EXCEPTION 'no team named %', p_team USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tokenbudget.push'), hashtext(p_team));
    WITH incoming AS (
        SELECT DISTINCT ON (r.key) r.*
        FROM jsonb_to_recordset(p_rows) AS r (
            key text, member text, machine text, session text, project text, model text,
            command text, at double precision, input bigint, output bigint,
            cache_write bigint, cache_read bigint, cost_micros bigint)
        ORDER BY r.key, r.input + r.output + r.cache_write + r.cache_read DESC,
                 r.cost_micros DESC
    )
    INSERT INTO usage AS u (team, request_key, member, machine, session, project, model,
                            command, at, day, input, output, cache_write, cache_read,
                            cost_micros)
    SELECT p_team, i.key, i.member, i.machine, i.session,
           coalesce(nullif(i.project, ''), '(no project)'), i.model, i.command,
           to_timestamp(i.at), (to_timestamp(i.at) AT TIME ZONE zone)::date,
           i.input, i.output, i.cache_write, i.cache_read, i.cost_micros
    FROM incoming AS i
    ORDER BY i.key
    ON CONFLICT (team, request_key) DO UPDATE
        SET input = excluded.input, output = excluded.output,
            cache_write = excluded.cache_write, cache_read = excluded.cache_read,
            cost_micros = excluded.cost_micros, command = excluded.command, pushed = now()
        WHERE excluded.input + excluded.output + excluded.cache_write + excluded.cache_read
              > u.input + u.output + u.cache_write + u.cache_read;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END $$;
"""

M004_BUDGETS = """
CREATE TABLE tokenbudget.budgets (
    team text NOT NULL REFERENCES tokenbudget.teams (name) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('total', 'daily', 'weekly', 'monthly')),
    scope text NOT NULL CHECK (scope IN ('team', 'member', 'project')),
    name text NOT NULL DEFAULT '',
    limit_value double precision NOT NULL CHECK (limit_value > 0),
    unit text NOT NULL CHECK (unit IN ('tokens', 'usd')),
    mode text NOT NULL CHECK (mode IN ('block', 'warn')),
    warn_at double precision NOT NULL DEFAULT 0.8,
    changed timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team, kind, scope, name)
);
"""

# A session, a 5-hour block and a run of a slash command happen on one machine: such team
# budgets are each member's own (scope 'member'), measured from the member's own ledger.
M005_MEMBER_LOCAL_KINDS = """
ALTER TABLE tokenbudget.budgets DROP CONSTRAINT budgets_kind_check;
ALTER TABLE tokenbudget.budgets ADD CONSTRAINT budgets_kind_check
    CHECK (kind IN ('total', 'daily', 'weekly', 'monthly', '5h', 'session', 'command'));
ALTER TABLE tokenbudget.budgets ADD COLUMN command text NOT NULL DEFAULT '';
ALTER TABLE tokenbudget.budgets DROP CONSTRAINT budgets_pkey;
ALTER TABLE tokenbudget.budgets ADD PRIMARY KEY (team, kind, scope, name, command);
ALTER TABLE tokenbudget.budgets ADD CONSTRAINT budgets_member_local
    CHECK (kind NOT IN ('5h', 'session', 'command') OR (scope = 'member' AND name = ''));
ALTER TABLE tokenbudget.budgets ADD CONSTRAINT budgets_command_named
    CHECK ((kind = 'command') = (command <> ''));
"""

# A session's corrections of Claude Code's totals are one row per (session, model, bucket)
# holding their sum (ingest.py), replaced by each push: a rebuilt ledger sends the same sums.
# A request's command may become known after it was pushed (a subagent read before its
# prompt): the same usage with another command updates it.
M006_PUSH_REPLACES_CORRECTIONS = """
CREATE OR REPLACE FUNCTION tokenbudget.push(p_team text, p_rows jsonb) RETURNS integer
LANGUAGE plpgsql SET search_path = tokenbudget, pg_temp AS $$
DECLARE
    zone text;
    changed integer;
BEGIN
    SELECT timezone INTO zone FROM teams WHERE name = p_team;
    IF zone IS NULL THEN
        RAISE EXCEPTION 'no team named %', p_team USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tokenbudget.push'), hashtext(p_team));
    WITH incoming AS (
        SELECT DISTINCT ON (r.key) r.*
        FROM jsonb_to_recordset(p_rows) AS r (
            key text, member text, machine text, session text, project text, model text,
            command text, at double precision, input bigint, output bigint,
            cache_write bigint, cache_read bigint, cost_micros bigint)
        ORDER BY r.key, r.input + r.output + r.cache_write + r.cache_read DESC,
                 r.cost_micros DESC
    )
    INSERT INTO usage AS u (team, request_key, member, machine, session, project, model,
                            command, at, day, input, output, cache_write, cache_read,
                            cost_micros)
    SELECT p_team, i.key, i.member, i.machine, i.session,
           coalesce(nullif(i.project, ''), '(no project)'), i.model, i.command,
           to_timestamp(i.at), (to_timestamp(i.at) AT TIME ZONE zone)::date,
           i.input, i.output, i.cache_write, i.cache_read, i.cost_micros
    FROM incoming AS i
    ORDER BY i.key
    ON CONFLICT (team, request_key) DO UPDATE
        SET input = excluded.input, output = excluded.output,
            cache_write = excluded.cache_write, cache_read = excluded.cache_read,
            cost_micros = excluded.cost_micros, command = excluded.command, pushed = now()
        WHERE (u.request_key LIKE 'adj-%'
               AND (excluded.input, excluded.output, excluded.cache_write, excluded.cache_read,
                    excluded.cost_micros, excluded.command)
                   IS DISTINCT FROM (u.input, u.output, u.cache_write, u.cache_read,
                                     u.cost_micros, u.command))
           OR excluded.input + excluded.output + excluded.cache_write + excluded.cache_read
              > u.input + u.output + u.cache_write + u.cache_read
           OR (excluded.input + excluded.output + excluded.cache_write + excluded.cache_read
               = u.input + u.output + u.cache_write + u.cache_read
               AND excluded.command <> u.command);
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END $$;
"""

# The rollups move once per statement, not per row: each push's rows are summed per window,
# member and project first, so a push of n rows of one member's day updates 12 rollup rows,
# not 12 n (the row trigger held the team's push lock that long: at 50 members pushing at
# once, that wait was most of a push's latency). Transition tables need one trigger per event;
# an INSERT ... ON CONFLICT DO UPDATE fires both, the inserted rows in one, the updated in
# the other.
_ROLLUP_DELTAS = """
    INSERT INTO rollups AS r (team, window_kind, window_start, member, project, tokens,
                              cost_micros)
    SELECT d.team, w.window_kind, w.window_start, s.member, s.project, sum(d.tokens),
           sum(d.cost)
    FROM ({changes}) AS d (team, day, member, project, tokens, cost)
         JOIN teams AS t ON t.name = d.team
         CROSS JOIN LATERAL window_starts(d.day, t.week_start) AS w
         CROSS JOIN LATERAL (VALUES ('', ''), (d.member, ''), ('', d.project))
             AS s (member, project)
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(d.tokens) <> 0 OR sum(d.cost) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (team, window_kind, window_start, member, project) DO UPDATE
        SET tokens = r.tokens + excluded.tokens,
            cost_micros = r.cost_micros + excluded.cost_micros;
"""
_NEW = ("SELECT n.team, n.day, n.member, n.project,"
        " n.input + n.output + n.cache_write + n.cache_read, n.cost_micros FROM new_rows AS n")
_OLD = ("SELECT o.team, o.day, o.member, o.project,"
        " -(o.input + o.output + o.cache_write + o.cache_read), -o.cost_micros"
        " FROM old_rows AS o")
M007_ROLLUPS_PER_STATEMENT = f"""
DROP TRIGGER usage_rollups ON tokenbudget.usage;
DROP FUNCTION tokenbudget.add_to_rollups();

CREATE FUNCTION tokenbudget.rollups_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = tokenbudget, pg_temp AS $$
BEGIN
{_ROLLUP_DELTAS.format(changes=_NEW)}
    RETURN NULL;
END $$;

CREATE FUNCTION tokenbudget.rollups_after_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = tokenbudget, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_rows AS o JOIN new_rows AS n USING (team, request_key)
               WHERE o.day <> n.day OR o.member <> n.member OR o.project <> n.project) THEN
        RAISE EXCEPTION 'a usage row keeps its day, member and project';
    END IF;
{_ROLLUP_DELTAS.format(changes=_NEW + " UNION ALL " + _OLD)}
    RETURN NULL;
END $$;

CREATE TRIGGER usage_rollups_insert AFTER INSERT ON tokenbudget.usage
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tokenbudget.rollups_after_insert();
CREATE TRIGGER usage_rollups_update AFTER UPDATE ON tokenbudget.usage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tokenbudget.rollups_after_update();
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("m001_teams_and_usage", M001_TEAMS_AND_USAGE),
    ("m002_rollups", M002_ROLLUPS),
    ("m003_push", M003_PUSH),
    ("m004_budgets", M004_BUDGETS),
    ("m005_member_local_kinds", M005_MEMBER_LOCAL_KINDS),
    ("m006_push_replaces_corrections", M006_PUSH_REPLACES_CORRECTIONS),
    ("m007_rollups_per_statement", M007_ROLLUPS_PER_STATEMENT),
)


def applied(conn: Any) -> list[str]:
    """The names of the migrations this database has, in the order applied."""
    exists = conn.execute("SELECT to_regclass('tokenbudget.migrations')").fetchone()[0]
    if exists is None:
        return []
    rows = conn.execute("SELECT name FROM tokenbudget.migrations ORDER BY id").fetchall()
    return [r[0] for r in rows]


def migrate(conn: Any, upto: str | None = None) -> list[str]:
    """Apply the migrations this database lacks (up to and including `upto`); their names.

    `conn` is a psycopg connection not in a transaction.
    """
    from tokenbudget.errors import TeamError

    names = [name for name, _ in MIGRATIONS]
    if upto is not None and upto not in names:
        raise TeamError(f"no migration named {upto}")
    done: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS tokenbudget")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tokenbudget.migrations (id serial PRIMARY KEY,"
            " name text UNIQUE NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
        )
        have = applied(conn)
        unknown = [n for n in have if n not in names]
        if unknown:
            raise TeamError(
                f"the team database has migration {unknown[0]}, newer than this tokenbudget"
                " knows: upgrade tokenbudget"
            )
        for name, sql in MIGRATIONS:
            if name not in have:
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO tokenbudget.migrations (name) VALUES (%s)", (name,))
                done.append(name)
            if name == upto:
                break
    return done
