"""Mutation testing of the modules that decide money and blocking, sampled.

Usage (from the repository root, with the `mutation` extra installed):

    .venv/bin/python bench/mutation.py [--modules budgets enforce engine ingest pricing]
        [--sample 80] [--seed 15] [--jobs 2] [--out bench/results/mutation.jsonl] [--only ID ...]

Mutants are made by cosmic-ray's operators. Those in annotations, `if TYPE_CHECKING:` blocks and
docstrings are left out (with `from __future__ import annotations` nothing evaluates them).
A seeded sample of `--sample` mutants per module is run, each in a private copy of the
repository: first against the tests that execute the mutated lines (found once, by running the
suite under coverage with one context per test, fastest tests first, stopping at the first
failure), then, if it survived, against the hook tests (which run the hook in a subprocess,
where coverage does not see them). A mutant is killed when a test fails or errors, or when the
run passes its time (three times what its tests took unmutated, plus 20 s, at most the
timeout). `bench/mutation-equivalent.txt` lists mutants judged equivalent (by id, with the
reason and the change judged); they are left out of the score while their id makes that
change. Results go to `--out` as JSON lines (one per mutant, a finished id is not run again
unless `--fresh`), and a summary with every survivor is printed as Markdown.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
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
DEFAULT_MODULES = ("budgets", "enforce", "engine", "ingest", "pricing")
# Module-level data whose mutants are left out: the dated table of Anthropic's rates. Each rate is
# checked against the published prices (pricing.py says where); a test pinning every rate would
# only copy the table. The arithmetic that turns rates into dollars (`_standard`'s multipliers,
# the long-context tier, `request_cost`) stays in.
DATA = {"pricing": ("PRICES_AS_OF", "_OPUS_4", "_OPUS_4_5", "_SONNET", "_SONNET_LONG",
                    "_FABLE_5", "_FABLE_5_1", "_TABLE")}
# Tests that check the code's form, not its behaviour: any mutant fails them (ruff, mypy), or
# they run the real Claude Code.
EXCLUDED_TESTS = ("tests/test_lint.py", "tests/e2e")
HOOK_TESTS = ("tests/test_hook.py", "tests/test_status_check.py")
COPIED = ("tokenbudget", "tests", "hooks", "bench", "skills", "pyproject.toml", ".claude-plugin")
EQUIVALENT = REPO / "bench" / "mutation-equivalent.txt"


def _pytest(python: str, cwd: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    """Run pytest in `cwd` on `args`: ('passed', 'failed', 'empty' or 'timeout', seconds, the
    first failure's line)."""
    env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not e2e",
             *args],
            cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    took = time.monotonic() - start
    if proc.returncode == 0:
        return "passed", took, ""
    if proc.returncode == 5:
        return "empty", took, ""
    # 1: a test failed; 2-4: collection or import failed (incompetent: pytest says 4, "found
    # no collectors", when a test file given by id no longer imports)
    lines = (proc.stdout + proc.stderr).decode(errors="replace").splitlines()
    first = next((ln for ln in lines if ln.startswith(("FAILED ", "ERROR"))), lines[-1:] or [""])
    return "failed", took, first if isinstance(first, str) else first[0]


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


def coverage_map(python: str, work: Path) -> tuple[Lines, dict[str, float]]:
    """{module file: {line: [test node ids]}} and each test's duration, from one covered run."""
    junit = work / "junit.xml"
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1",
               COVERAGE_FILE=str(work / ".coverage"))
    ignores = [f"--ignore={t}" for t in EXCLUDED_TESTS]
    # pytest-cov names each context after the test item running (coverage's own
    # test_function contexts credit a property test's lines to hypothesis' internals).
    subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not e2e",
         "--cov=tokenbudget", "--cov-context=test", "--cov-report=", f"--junitxml={junit}",
         *ignores, "tests"],
        cwd=work, env=env, capture_output=True, check=False,
    )
    from coverage import CoverageData

    data = CoverageData(basename=str(work / ".coverage"))
    data.read()
    lines: dict[str, dict[int, list[str]]] = {}
    for filename in data.measured_files():
        by_line = data.contexts_by_lineno(filename)
        rel = os.path.relpath(filename, work) if os.path.isabs(filename) else filename
        lines[rel] = {n: sorted({_test_of(c) for c in ctx if c}) for n, ctx in by_line.items()}
    durations: dict[str, float] = {}
    broken: set[str] = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
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
    python: str, work: Path, m: dict[str, object], lines: Lines,
    durations: dict[str, float], timeout: float,
) -> dict[str, object]:
    import cosmic_ray.plugins
    from cosmic_ray.mutating import use_mutation

    module = str(m["module"])
    path = work / "tokenbudget" / f"{module}.py"
    lo, hi = m["lines"]  # type: ignore[misc]
    by_line = lines.get(f"tokenbudget/{module}.py", {})
    tests = sorted({t for n in range(lo, hi + 1) for t in by_line.get(n, [])},
                   key=lambda t: (durations.get(t, 0.0), t))
    if not tests:
        # A line run only at import (a constant, a pattern, a default) has no test's context:
        # the tests of the functions that use what it defines (or whose default it is) stand
        # in, else the test files that execute most of the module's lines.
        users = _users_of(path.read_text(), lo, hi)
        tests = sorted({t for n in users for t in by_line.get(n, [])},
                       key=lambda t: (durations.get(t, 0.0), t)) or _main_test_files(by_line)
    operator = cosmic_ray.plugins.get_operator(str(m["operator"]))()
    result: dict[str, object] = {**m, "covering": len(tests)}
    with use_mutation(path, operator, int(m["occurrence"])) as (before, after):  # type: ignore[call-overload]
        if after is None:
            return {**result, "outcome": "no-mutant"}
        result["diff"] = _diff(before, after)
        stage = "covering"
        outcome, took, failure = (
            _pytest(python, work, tests, _limit(tests, durations, timeout))
            if tests else ("empty", 0.0, "")
        )
        if outcome in ("passed", "empty"):
            stage = "hook"
            hook = [t for t in durations if t.startswith(HOOK_TESTS)]
            outcome, more, failure = _pytest(
                python, work, list(HOOK_TESTS), _limit(hook, durations, timeout))
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
    survivors = []
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
    if survivors:
        out += ["", "Survivors:", ""]
        for r in survivors:
            out.append(f"- `{r['id']}` (line {r['lines'][0]}): `{r['diff']}`")  # type: ignore[index]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    p.add_argument("--sample", type=int, default=80, help="mutants per module (0: all)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0,
                   help="at most this many seconds per test run (less for quick tests)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mutation.jsonl")
    p.add_argument("--only", nargs="+", help="run just these mutant ids (again, if done)")
    p.add_argument("--fresh", action="store_true", help="forget earlier results in --out")
    p.add_argument("--list", action="store_true", help="print the sampled ids and stop")
    p.add_argument("--summary", action="store_true", help="print the summary of --out and stop")
    p.add_argument("--map", type=Path, help="keep the coverage map in this file, and reuse it "
                   "if it is there (only while the tests are unchanged)")
    args = p.parse_args()

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
    print(f"{len(chosen)} mutants, {len(todo)} to run", file=sys.stderr)

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="tb-mutation-") as tmp:
        started = time.monotonic()
        base = _copy_repo(Path(tmp) / "map")
        if todo and args.map and args.map.exists():
            lines, durations = json.loads(args.map.read_text())
            lines = {f: {int(n): t for n, t in by.items()} for f, by in lines.items()}
        elif todo:
            lines, durations = coverage_map(python, base)
            print(f"coverage map in {time.monotonic() - started:.0f}s", file=sys.stderr)
            if args.map:
                args.map.write_text(json.dumps([lines, durations]))
        works = [_copy_repo(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        free = list(works)
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def job(m: dict[str, object]) -> dict[str, object]:
            work = free.pop()
            try:
                return run_one(python, work, m, lines, durations, args.timeout)
            finally:
                free.append(work)

        with concurrent.futures.ThreadPoolExecutor(len(works)) as executor, args.out.open("a") as f:
            for n, r in enumerate(executor.map(job, todo), 1):
                r["pool"] = next(m["pool"] for m in chosen if m["id"] == r["id"])
                f.write(json.dumps(r) + "\n")
                f.flush()
                done[str(r["id"])] = r
                print(f"[{n}/{len(todo)} {time.monotonic() - started:.0f}s] {r['id']}: "
                      f"{r['outcome']}", file=sys.stderr)
        if args.only:  # keep one line per id: the latest
            args.out.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    wanted_ids = {m["id"] for m in chosen}
    print(summary([r for i, r in done.items() if i in wanted_ids], _equivalent()))


if __name__ == "__main__":
    main()
