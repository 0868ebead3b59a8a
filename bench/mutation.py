"""Mutation testing of the modules that decide money and blocking, sampled.

Usage (from the repository root, with the `mutation` extra installed):

    .venv/bin/python bench/mutation.py [--modules budgets enforce engine ingest pricing]
        [--sample 60] [--seed 15] [--jobs 2] [--out bench/results/mutation.jsonl] [--only ID ...]
        [--check-equivalent] [--cold]

Mutants are made by cosmic-ray's operators. Those in annotations, `if TYPE_CHECKING:` blocks
and docstrings are left out (with `from __future__ import annotations` nothing evaluates them).
A seeded sample of `--sample` mutants per module is run, each in a private copy of the
repository: first against the tests that execute the mutated lines (found once, by running the
suite under coverage with one context per test, fastest tests first, stopping at the first
failure), then, if it survived, against the hook tests (which run the hook in a subprocess,
where coverage does not see them). A mutant is killed when a test fails or errors, or when the
run passes its time (three times what its tests took unmutated, plus 20 s, at most the timeout)
or, in the resident runner, when one test passes its own (five times what it took unmutated,
plus 10 s). Each copy has a resident test runner: a process that has imported pytest and its
plugins once and forks a child for each test run, which imports the tests and the mutated
module from the copy as a new process would (`--cold` starts pytest anew each time instead).
`bench/mutation-equivalent.txt` lists mutants judged equivalent (by id, with the reason and the
change judged); they are left out of the score while their id makes that change, and not run
(`--check-equivalent` runs them too, and names any a test now kills). Results go to `--out` as
JSON lines (one per mutant, a finished id is not run again unless `--fresh`), and a summary
with every survivor is printed as Markdown.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODULES = ("budgets", "limits", "enforce", "engine", "ingest", "pricing", "hot")
# Module-level data whose mutants are left out: the dated table of Anthropic's rates. Each rate is
# checked against the published prices (pricing.py says where); a test pinning every rate would
# only copy the table. The arithmetic that turns rates into dollars (`_standard`'s multipliers,
# the long-context tier, `request_cost`) stays in.
DATA = {"pricing": ("PRICES_AS_OF", "_OPUS_4", "_OPUS_4_5", "_SONNET", "_SONNET_LONG",
                    "_FABLE_5", "_FABLE_5_1", "_TABLE")}
# Tests that check the code's form, not its behaviour: any mutant fails them (ruff, mypy), or
# they run the real Claude Code.
EXCLUDED_TESTS = ("tests/test_lint.py", "tests/e2e")
# Tests that run the package in a subprocess, where coverage does not see which lines they
# run: a survivor of its covering tests meets them all (test_imports.py pins what a hook
# call imports, which a mutant of an `if TYPE_CHECKING:` block changes and nothing else sees).
HOOK_TESTS = ("tests/test_hook.py", "tests/test_status_check.py", "tests/test_imports.py")
COPIED = ("tokenbudget", "tests", "hooks", "bench", "skills", "pyproject.toml", ".claude-plugin")
EQUIVALENT = REPO / "bench" / "mutation-equivalent.txt"


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not e2e"]


def _outcome(code: int, out: str) -> tuple[str, str]:
    """pytest's exit code as 'passed', 'failed' or 'empty', with the first failure's line."""
    if code == 0:
        return "passed", ""
    if code == 5:
        return "empty", ""
    # 1: a test failed; 2-4: collection or import failed (incompetent: pytest says 4, "found
    # no collectors", when a test file given by id no longer imports)
    lines = out.splitlines()
    return "failed", next((ln for ln in lines if ln.startswith(("FAILED ", "ERROR"))),
                          lines[-1] if lines else "")


class ColdRunner:
    """Runs pytest as a new process for each test run (`--cold`): what `Resident` saves is
    measured against this."""

    def __init__(self, python: str, cwd: Path) -> None:
        self.python, self.cwd = python, cwd

    def run(self, args: list[str], timeout: float,
            per_test: dict[str, float] | None = None) -> tuple[str, float, str]:
        """pytest on `args` in the work copy: ('passed', 'failed', 'empty' or 'timeout',
        seconds, the first failure's line)."""
        env = dict(os.environ, PYTHONPATH=str(self.cwd), PYTHONDONTWRITEBYTECODE="1")
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [self.python, "-m", "pytest", *PYTEST_ARGS, *args],
                cwd=self.cwd, env=env, capture_output=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - start, ""
        took = time.monotonic() - start
        outcome, first = _outcome(proc.returncode, (proc.stdout + proc.stderr).decode(
            errors="replace"))
        return outcome, took, first

    def close(self) -> None:
        pass


class Resident:
    """A test runner that stays up for one work copy (`--serve`): it imports pytest and its
    plugins once, then forks a child for each test run, in which pytest starts, imports the
    tests and the (mutated) package from the work copy, and runs them. Nothing of tokenbudget or
    the tests is loaded before the fork (the server checks), so each run sees the module as it
    is on disk then, as a new process would; what is saved is the interpreter's start and the
    import of pytest, hypothesis and pytest-cov."""

    def __init__(self, python: str, cwd: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--serve"], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def run(self, args: list[str], timeout: float,
            per_test: dict[str, float] | None = None) -> tuple[str, float, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"args": args, "timeout": timeout, "per_test": per_test or {}}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"the resident test runner ended (exit {self.proc.wait()})")
        answer = json.loads(reply)
        if answer["code"] is None:
            return "timeout", answer["took"], ""
        outcome, first = _outcome(answer["code"], answer["out"])
        return outcome, answer["took"], first

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


class _PerTestLimit:
    """A pytest plugin for a resident run's child: it tells the server, through a pipe, when
    each test (set-up and teardown included) must be done by (`limits` by test function,
    `limits[""]` for the rest; a deadline on the monotonic clock, which all processes share),
    and the server ends the run when that passes. A mutant that hangs one test then costs that
    test's limit, not the whole run's. The server watches, not a thread or a signal here: a
    hang in C (a huge power) holds the GIL, and tests use signals of their own."""

    def __init__(self, limits: dict[str, float], pipe: int) -> None:
        self.limits, self.pipe = limits, pipe

    def pytest_runtest_protocol(self, item: object, nextitem: object) -> None:
        node = str(getattr(item, "nodeid", "")).split("[")[0]
        limit = self.limits.get(node, self.limits.get("", 1e9))
        os.write(self.pipe, f"{time.monotonic() + limit} {node}\n".encode())

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        os.write(self.pipe, b"0 -\n")


def serve() -> None:
    """The resident runner's server: one JSON request a line on stdin ({args, timeout}), one
    reply a line on stdout ({code: pytest's exit code or null for a timeout, took, out})."""
    import importlib.metadata
    import signal

    import pytest

    # Plugins pytest would load from their entry points: imported here once. pytest then
    # cannot rewrite their asserts (it says so with a warning, ignored below); the tests' own
    # modules are imported after the fork and rewritten as usual.
    for ep in importlib.metadata.entry_points(group="pytest11"):
        ep.load()
    loaded = [n for n in sys.modules if n.split(".")[0] in ("tokenbudget", "tests", "conftest")]
    if loaded:
        raise SystemExit(f"the resident runner must not load the code under test: {loaded}")
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as out:
            start = time.monotonic()
            progress, told = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: one pytest run, in a process group of its own
                exit_code = 3
                try:
                    os.setpgid(0, 0)
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(out.fileno(), 1)
                    os.dup2(out.fileno(), 2)
                    os.close(progress)
                    watch = _PerTestLimit(request.get("per_test", {}), told)
                    exit_code = int(pytest.main([
                        *PYTEST_ARGS, "-W", "ignore::pytest.PytestAssertRewriteWarning",
                        *request["args"]], plugins=[watch]))
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(exit_code)
            os.close(told)
            os.set_blocking(progress, False)
            deadline = start + float(request["timeout"])
            test_deadline, test, said = 0.0, "", b""
            code: int | None = None
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    break
                with contextlib.suppress(BlockingIOError):
                    said += os.read(progress, 65536)
                if b"\n" in said:
                    *lines, said = said.split(b"\n")
                    when, _, node = lines[-1].decode().partition(" ")
                    test_deadline, test = float(when), node
                now = time.monotonic()
                if test_deadline and now > test_deadline:
                    os.killpg(pid, signal.SIGKILL)  # one test ran past its own limit
                    os.waitpid(pid, 0)
                    out.write(f"\nPER-TEST LIMIT: {test}\n".encode())
                    break
                if now > deadline:
                    os.killpg(pid, signal.SIGKILL)  # the run and whatever it started
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
            took = time.monotonic() - start
            os.close(progress)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # whatever the run left behind
            out.seek(0)
            text = out.read().decode(errors="replace")
        replies.write(json.dumps({"code": code, "took": took, "out": text[-20000:]}) + "\n")
        replies.flush()


def _copy_repo(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, into / name)
    return into


# ---------------------------------------------------------------- which tests run which line


Lines = dict[str, dict[int, list[str]]]


def coverage_map(python: str, work: Path, jobs: int = 1) -> tuple[Lines, dict[str, float]]:
    """{module file: {line: [test node ids]}} and each test's duration, from one covered run of
    the suite, split by test file into `jobs` runs side by side (their data combined)."""
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    files = sorted(
        (f for f in (work / "tests").rglob("test_*.py")
         if not str(f.relative_to(work)).startswith(EXCLUDED_TESTS)),
        key=lambda f: (-f.stat().st_size, f),
    )
    shares: list[list[Path]] = [[] for _ in range(max(1, jobs))]
    for f in files:  # the largest files first, each to the share with the fewest bytes so far
        min(shares, key=lambda share: sum(x.stat().st_size for x in share)).append(f)
    # pytest-cov names each context after the test item running (coverage's own
    # test_function contexts credit a property test's lines to hypothesis' internals).
    runs = [
        subprocess.Popen(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not e2e",
             "--cov=tokenbudget", "--cov-context=test", "--cov-report=",
             f"--junitxml={work / f'junit{i}.xml'}", *map(str, share)],
            cwd=work, env=dict(env, COVERAGE_FILE=str(work / f".coverage{i}")),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i, share in enumerate(shares) if share
    ]
    for run in runs:
        run.wait()
    from coverage import CoverageData

    lines: dict[str, dict[int, list[str]]] = {}
    durations: dict[str, float] = {}
    broken: set[str] = set()
    for i in range(len(runs)):
        data = CoverageData(basename=str(work / f".coverage{i}"))
        data.read()
        for filename in data.measured_files():
            by_line = data.contexts_by_lineno(filename)
            rel = os.path.relpath(filename, work) if os.path.isabs(filename) else filename
            into = lines.setdefault(rel, {})
            for n, ctx in by_line.items():
                into[n] = sorted(set(into.get(n, [])) | {_test_of(c) for c in ctx if c})
        for case in ET.parse(work / f"junit{i}.xml").getroot().iter("testcase"):
            # classname tests.test_budgets, name test_x[param]: the function's total time.
            node = _node_id(work, f"{case.get('classname')}.{case.get('name', '').split('[')[0]}")
            durations[node] = durations.get(node, 0.0) + float(case.get("time") or 0)
            if case.find("failure") is not None or case.find("error") is not None:
                broken.add(node)
    if broken:
        # A test that fails with no mutant would kill every mutant it runs on.
        print(f"left out, failing without a mutant: {sorted(broken)}", file=sys.stderr)
        for by_line in lines.values():
            for n, node_ids in by_line.items():
                by_line[n] = [t for t in node_ids if t not in broken]
    return lines, durations


def _test_of(context: str) -> str:
    """`tests/test_x.py::test_y[param]|run` (a pytest-cov context) as `tests/test_x.py::test_y`:
    every parameter of the test runs, since some ids do not survive a command line."""
    return context.split("|")[0].split("[")[0]


def _node_id(work: Path, context: str) -> str:
    """`tests.test_x.Class.test_y` (a coverage context) as `tests/test_x.py::Class::test_y`."""
    parts = context.split(".")
    for i in range(len(parts), 0, -1):
        if (work / Path(*parts[:i])).with_suffix(".py").is_file():
            return "/".join(parts[:i]) + ".py::" + "::".join(parts[i:])
    return context


# ---------------------------------------------------------------- the mutants


def _skipped_ranges(
    source: str, data: tuple[str, ...] = ()
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Annotations, TYPE_CHECKING blocks, docstrings and the module-level assignments of the
    names in `data`: (start, end) as (line, column)."""
    spans = []

    def span(node: ast.AST) -> None:
        end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
        spans.append(((node.lineno, node.col_offset), end))

    tree = ast.parse(source)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id in data for t in targets):
            span(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            span(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            span(node.returns)
        elif isinstance(node, ast.AnnAssign):
            span(node.annotation)
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                span(stmt)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                span(body[0])
    return spans


def mutants(module: str) -> list[dict[str, object]]:
    """Every mutant cosmic-ray makes of tokenbudget/`module`.py, less the skipped ranges."""
    import cosmic_ray.plugins
    from cosmic_ray.ast import ast_nodes, get_ast_from_path

    path = REPO / "tokenbudget" / f"{module}.py"
    skipped = _skipped_ranges(path.read_text(), DATA.get(module, ()))
    tree = get_ast_from_path(path)
    found = []
    for name in cosmic_ray.plugins.operator_names():
        cls = cosmic_ray.plugins.get_operator(name)
        if cls.arguments():
            continue  # operators that need arguments are not configured
        operator = cls()
        positions = (pos for node in ast_nodes(tree) for pos in operator.mutation_positions(node))
        for occurrence, (start, end) in enumerate(positions):
            if any(lo <= tuple(start) < hi for lo, hi in skipped):
                continue
            found.append({
                "id": f"{module}:{name.removeprefix('core/')}:{occurrence}",
                "module": module, "operator": name, "occurrence": occurrence,
                "lines": [start[0], end[0]],
            })
    return found


def _equivalent() -> dict[str, str]:
    """{id: the change it was judged for} from mutation-equivalent.txt: an entry is the id and
    the reason on one line, then `  at: <the change>` (the diff without line numbers) on the
    next. Ids are positions in the module, so a change of code can give an id to another
    mutant: an entry counts only while its mutant makes the same change."""
    if not EQUIVALENT.exists():
        return {}
    found: dict[str, str] = {}
    last = None
    for line in EQUIVALENT.read_text().splitlines():
        if line.startswith("  at: ") and last is not None:
            found[last] = line.removeprefix("  at: ")
        elif line.strip() and not line.startswith(("#", " ")):
            last = line.split()[0]
            found[last] = ""
    return found


def _listed_change(m: dict[str, object], listed: dict[str, str]) -> str | None:
    """The diff of mutant `m` if mutation-equivalent.txt lists it for the change it makes now,
    else None (not listed, or listed for a change its id no longer makes)."""
    if m["id"] not in listed:
        return None
    import cosmic_ray.plugins
    from cosmic_ray.mutating import mutate_code

    before = (REPO / "tokenbudget" / f"{m['module']}.py").read_text()
    operator = cosmic_ray.plugins.get_operator(str(m["operator"]))()
    after = mutate_code(before, operator, int(m["occurrence"]))  # type: ignore[arg-type]
    if after is None:
        return None
    diff = _diff(before, after)
    return diff if listed[str(m["id"])] == _change(diff) else None


def _change(diff: str) -> str:
    """A mutant's diff without its line numbers, which move with any edit above it."""
    return " | ".join(ln.split(": ", 1)[1] if ln.split(": ", 1)[0].isdigit() else ln
                     for ln in diff.splitlines())


def equivalent_ids(results: list[dict[str, object]], listed: dict[str, str]) -> set[str]:
    """The ids of `results` judged equivalent for the change they make now; a stale entry (its
    id now names another change) is reported and its mutant scored like any other."""
    ids = set()
    for r in results:
        rid = str(r["id"])
        if rid not in listed or "diff" not in r:
            continue
        if listed[rid] == _change(str(r["diff"])):
            ids.add(rid)
        else:
            print(f"stale equivalent entry, scored: {rid} now makes {_change(str(r['diff']))!r}",
                  file=sys.stderr)
    return ids


# ---------------------------------------------------------------- running one


def run_one(
    runner: ColdRunner | Resident, work: Path, m: dict[str, object], lines: Lines,
    durations: dict[str, float], timeout: float, extra: tuple[str, ...] = (),
) -> dict[str, object]:
    import cosmic_ray.plugins
    from cosmic_ray.mutating import use_mutation

    module = str(m["module"])
    path = work / "tokenbudget" / f"{module}.py"
    lo, hi = m["lines"]  # type: ignore[misc]
    by_line = lines.get(f"tokenbudget/{module}.py", {})
    # A line run only at import (a constant, a pattern, a default) has no test's context, or
    # that of whichever test happened to import the module first in its map process: the
    # tests of the functions that use what it defines (or whose default it is) run too, else
    # the test files that execute most of the module's lines.
    source = path.read_text()
    users = _users_of(source, lo, hi)
    tests = sorted({t for n in {*range(lo, hi + 1), *users} for t in by_line.get(n, [])},
                   key=lambda t: (durations.get(t, 0.0), t))
    if not tests or (not users and not _in_a_function_body(source, lo)):
        tests += _main_test_files(by_line)
    tests = [*extra, *(t for t in tests if t not in extra)]
    operator = cosmic_ray.plugins.get_operator(str(m["operator"]))()
    result: dict[str, object] = {**m, "covering": len(tests)}
    with use_mutation(path, operator, int(m["occurrence"])) as (before, after):  # type: ignore[call-overload]
        if after is None:
            return {**result, "outcome": "no-mutant"}
        result["diff"] = _diff(before, after)
        stage = "covering"
        outcome, took, failure = (
            runner.run(tests, _limit(tests, durations, timeout), _per_test(tests, durations))
            if tests else ("empty", 0.0, "")
        )
        if outcome in ("passed", "empty"):
            stage = "hook"
            hook = [t for t in durations if t.startswith(HOOK_TESTS)]
            outcome, more, failure = runner.run(
                list(HOOK_TESTS), _limit(hook, durations, timeout), _per_test(hook, durations))
            took += more
    result.update(outcome="survived" if outcome in ("passed", "empty") else "killed",
                  by=outcome, stage=stage, failure=failure[:200], seconds=round(took, 1))
    return result


def _limit(tests: list[str], durations: dict[str, float], timeout: float) -> float:
    """Seconds a run of `tests` gets: three times what they took unmutated, plus pytest's
    start-up, at most `timeout`. A mutant that loops forever costs this, not the whole timeout;
    a mutant whose 127 covering tests take 40 s unmutated is not killed by a fixed 90 s."""
    expected = sum(d for node, d in durations.items()
                   if any(node == t or node.startswith(t + "::") for t in tests))
    return min(timeout, 20.0 + 3.0 * expected)


def _per_test(tests: list[str], durations: dict[str, float]) -> dict[str, float]:
    """Seconds each test function of `tests` gets in a resident run (set-up and teardown
    included): five times what it took unmutated (all its parameters together), plus 10 s; 30 s
    for a test the map did not time. A run's own limit (`_limit`) still bounds the whole.
    The map charges a shared fixture's set-up to the test that ran first, and a mutant's run
    may start with another: a session fixture slower than 10 s would make that one a
    "timeout" (this suite's one, the PostgreSQL cluster, takes about 0.5 s)."""
    chosen = {node: 10.0 + 5.0 * d for node, d in durations.items()
              if any(node == t or node.startswith(t + "::") for t in tests)}
    return {"": 30.0, **chosen}


def _users_of(source: str, lo: int, hi: int) -> set[int]:
    """The lines of the functions that read a name the module-level lines lo..hi assign, or of
    the function whose signature (a default, evaluated once at import) lines lo..hi are in."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body
                and node.lineno <= lo and hi < node.body[0].lineno):
            return set(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    names = {
        t.id
        for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
        and node.lineno <= hi and (node.end_lineno or node.lineno) >= lo
        for t in ast.walk(node) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
    }
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(n, ast.Name) and n.id in names for n in ast.walk(node)
        ):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _in_a_function_body(source: str, line: int) -> bool:
    """Whether `line` runs when a function is called (not once, at import)."""
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body
        and node.body[0].lineno <= line <= (node.end_lineno or node.lineno)
        for node in ast.walk(ast.parse(source))
    )


def _main_test_files(by_line: dict[int, list[str]], n: int = 4) -> list[str]:
    counts: dict[str, int] = {}
    for node_ids in by_line.values():
        for f in {t.split("::")[0] for t in node_ids}:
            counts[f] = counts.get(f, 0) + 1
    return sorted(counts, key=lambda f: (-counts[f], f))[:n]


def _diff(before: str, after: str) -> str:
    a, b = before.splitlines(), after.splitlines()
    changed = [(i + 1, x, y) for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    if len(a) != len(b) or not changed:
        import difflib

        return "\n".join(list(difflib.unified_diff(a, b, lineterm="", n=0))[2:12])
    return "\n".join(f"{n}: {x.strip()}  ->  {y.strip()}" for n, x, y in changed[:4])


# ---------------------------------------------------------------- the run


def summary(results: list[dict[str, object]], listed: dict[str, str]) -> str:
    equivalent = equivalent_ids(results, listed)
    out = ["| Module | Mutants | Sampled | Killed | Survived | Equivalent | Score |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    survivors: list[dict[str, object]] = []
    contested: list[dict[str, object]] = []
    for module in sorted({str(r["module"]) for r in results}):
        rs = [r for r in results if r["module"] == module and r["outcome"] != "no-mutant"]
        eq = [r for r in rs if r["id"] in equivalent]
        killed = [r for r in rs if r["outcome"] == "killed" and r["id"] not in equivalent]
        alive = [r for r in rs if r["outcome"] == "survived" and r["id"] not in equivalent]
        total = len(killed) + len(alive)
        score = f"{100 * len(killed) / total:.1f}%" if total else "-"
        pool = rs[0].get("pool", "?") if rs else "?"
        out.append(f"| {module}.py | {pool} | {len(rs)} | {len(killed)} | {len(alive)} | "
                   f"{len(eq)} | {score} |")
        survivors += alive
        contested += [r for r in eq if r["outcome"] == "killed"]
    if contested:  # only with --check-equivalent: the entry's reason is wrong
        out += ["", "Listed as equivalent, yet killed (fix mutation-equivalent.txt):", ""]
        out += [f"- `{r['id']}`: {r['failure']}" for r in contested]
    if survivors:
        out += ["", "Survivors:", ""]
        for r in survivors:
            out.append(f"- `{r['id']}` (line {r['lines'][0]}): `{r['diff']}`")  # type: ignore[index]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    p.add_argument("--sample", type=int, default=60, help="mutants per module (0: all)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0,
                   help="at most this many seconds per test run (less for quick tests)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mutation.jsonl")
    p.add_argument("--only", nargs="+", help="run just these mutant ids (again, if done)")
    p.add_argument("--tests", nargs="+", default=[],
                   help="run these tests (node ids or files) first for each mutant: to check "
                        "new tests against --only mutants without making the map again")
    p.add_argument("--fresh", action="store_true", help="forget earlier results in --out")
    p.add_argument("--list", action="store_true", help="print the sampled ids and stop")
    p.add_argument("--summary", action="store_true", help="print the summary of --out and stop")
    p.add_argument("--map", type=Path, help="keep the coverage map in this file, and reuse it "
                   "if it is there (only while the tests are unchanged)")
    p.add_argument("--check-equivalent", action="store_true",
                   help="run the mutants mutation-equivalent.txt lists too (by default one whose "
                   "change is still the one judged is recorded as equivalent, not run)")
    p.add_argument("--cold", action="store_true",
                   help="start pytest as a new process for every test run (no resident runner)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve()
        return

    chosen: list[dict[str, object]] = []
    for module in args.modules:
        pool = mutants(module)
        for m in pool:
            m["pool"] = len(pool)
        rng = random.Random(f"{args.seed}:{module}")
        sample = pool if not args.sample or args.sample >= len(pool) else rng.sample(
            pool, args.sample)
        chosen += sorted(sample, key=lambda m: int(m["occurrence"]))  # type: ignore[call-overload]
    if args.only:
        wanted = set(args.only)
        pools = {module: mutants(module) for module in args.modules}
        chosen = [m for m in chosen if m["id"] in wanted] + [
            {**m, "pool": len(pools[module])} for module in args.modules
            for m in pools[module] if m["id"] in wanted and m["id"] not in {c["id"] for c in chosen}
        ]
    if args.list:
        print("\n".join(str(m["id"]) for m in chosen))
        return

    done: dict[str, dict[str, object]] = {}
    if args.out.exists() and not args.fresh:
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done[r["id"]] = r
    elif args.fresh and args.out.exists():
        args.out.unlink()
    if args.summary:
        ids = {m["id"] for m in chosen}
        print(summary([r for i, r in done.items() if i in ids], _equivalent()))
        return
    todo = [m for m in chosen if args.only or m["id"] not in done]
    listed = _equivalent()
    if not args.check_equivalent:
        judged = []
        for m in todo:
            diff = _listed_change(m, listed)
            if diff is not None:
                done[str(m["id"])] = {**m, "diff": diff, "outcome": "equivalent", "by": "listed",
                                      "stage": "listed", "seconds": 0.0}
                judged.append(m)
        todo = [m for m in todo if m not in judged]
        if judged:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.writelines(json.dumps(done[str(m["id"])]) + "\n" for m in judged)
    print(f"{len(chosen)} mutants, {len(todo)} to run", file=sys.stderr)

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="tb-mutation-") as tmp:
        started = time.monotonic()
        base = _copy_repo(Path(tmp) / "map")
        if todo and args.map and args.map.exists():
            lines, durations = json.loads(args.map.read_text())
            lines = {f: {int(n): t for n, t in by.items()} for f, by in lines.items()}
        elif todo:
            lines, durations = coverage_map(python, base, args.jobs)
            print(f"coverage map in {time.monotonic() - started:.0f}s", file=sys.stderr)
            if args.map:
                args.map.write_text(json.dumps([lines, durations]))
        works = [_copy_repo(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        kind = ColdRunner if args.cold else Resident
        free = [(work, kind(python, work)) for work in works]
        runners = list(free)
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def job(m: dict[str, object]) -> dict[str, object]:
            work, runner = free.pop()
            try:
                return run_one(runner, work, m, lines, durations, args.timeout,
                               tuple(args.tests))
            finally:
                free.append((work, runner))

        with concurrent.futures.ThreadPoolExecutor(len(works)) as executor, args.out.open("a") as f:
            for n, r in enumerate(executor.map(job, todo), 1):
                r["pool"] = next(m["pool"] for m in chosen if m["id"] == r["id"])
                f.write(json.dumps(r) + "\n")
                f.flush()
                done[str(r["id"])] = r
                print(f"[{n}/{len(todo)} {time.monotonic() - started:.0f}s] {r['id']}: "
                      f"{r['outcome']}", file=sys.stderr)
        for _, runner in runners:
            runner.close()
        print(f"mutants run in {time.monotonic() - started:.0f}s", file=sys.stderr)
    if args.only:  # keep one line per id: the latest
        args.out.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    wanted_ids = {m["id"] for m in chosen}
    print(summary([r for i, r in done.items() if i in wanted_ids], listed))


if __name__ == "__main__":
    main()
