"""One simulated team member, run as its own process (test_team_concurrency.py).

Usage: member_worker.py NAME CASE... with HOME and TOKENBUDGET_HOME its own. For each case it
copies the fixture into its Claude data folder under ids of its own, then runs `team sync`
(record, push, pull) and pushes the same rows once more (a replay), which must change nothing.
Prints one JSON line: the rows the replays changed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.helpers import FIXTURES
from tokenbudget import config
from tokenbudget.cli import main
from tokenbudget.store import open_store
from tokenbudget.team import db, sync


def install(case: str, member: str, claude: Path) -> None:
    source = FIXTURES / case / "projects"
    for path in source.rglob("*.jsonl"):
        copy = claude / "projects" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text().replace("msg_fake_", f"msg_{member}_{case}_")
        copy.write_text(text.replace("req_fake_", f"req_{member}_{case}_"))


def run(member: str, cases: list[str]) -> int:
    claude = Path(os.environ["HOME"]) / ".claude"
    team = dict(config.load_config().team or {})
    replay_changed = 0
    for case in cases:
        install(case, member, claude)
        main(["sync"], standalone_mode=False)  # record: the outbox fills
        waiting = dict(open_store().load()["outbox"])
        main(["team", "sync"], standalone_mode=False)
        rows = sync.rows_of(waiting, team["member"], sync.machine_name(), {})
        with db.session(team["dsn"]) as conn:
            replay_changed += db.push(conn, team["team"], rows)
    return replay_changed


if __name__ == "__main__":
    print(json.dumps({"replayChanged": run(sys.argv[1], sys.argv[2:])}))
