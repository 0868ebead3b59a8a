"""The lean command hook of resident mode: the event handed to the answerer, or decided here.

`install --resident` registers SessionStart, UserPromptSubmit, SubagentStop and SessionEnd as
`python -I -S -c '...from tokenbudget.relay_hook import run; run()' EVENT`: what it imports
until the answerer has answered is what a round trip on its Unix socket needs (relay.py). When
the answerer is not there (not started yet, crashed, an older one without the socket), the full
command hook runs in this process: it decides on its own and starts the answerer (see
hook._resident), as the command hooks did before.

Only `install --resident` registers this hook, and there SessionStart is async (nobody waits for
its answer, which it keeps `{}`: hook.quiet_start; claude_settings.RESIDENT_ASYNC): so whoever
decides the event, the answerer or this process, is told so (hook.handle's `async_start`), and
SessionStart's notes, warnings and context hint go with the prompt's answer instead. A
SessionStart still waited for (settings written before, until `install --resident` runs again)
loses nothing by it: what it would have said, the prompt right after it says.
"""

from __future__ import annotations

import os
import sys

from tokenbudget import relay


def run() -> None:
    """The lean command hook's process: what `install --resident` registers. main(), ended as
    hook.run ends its process once the answer is out (hook.end_process, not imported here: the
    relayed way stays lean); the cyclic garbage collector off meanwhile, and when the full hook
    decides here, what it reads kept (hook.own_process)."""
    import gc

    gc.disable()
    main(own_process=True)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(0)


def main(own_process: bool = False) -> None:
    """Entry point of the lean command hook: prints one JSON object and exits 0.
    `own_process`: called by run (the full hook, when it decides here, keeps what it reads)."""
    event = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        raw = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read(
            8 * 1024 * 1024)
    except (OSError, ValueError):
        raw = b""
    if os.environ.get("TOKENBUDGET_DISABLE") == "1":
        print("{}")
        return
    reply = None
    retry = False
    if event in relay.RELAYED:
        try:
            reply = relay.ask(event, raw, project=os.environ.get("CLAUDE_PROJECT_DIR", ""),
                              dirs=relay.session_dirs(), async_start=True)
        except TimeoutError:
            reply = _late(event)
        except relay.Dropped:
            retry = True  # decided here, even if the answerer recorded it before it died
        except Exception:
            reply = None  # never a traceback: the full hook answers instead
    if reply is None:
        from tokenbudget import hook

        if own_process:
            hook.own_process()
        hook.main([event], raw, retry=retry, async_start=True)
        return
    if event == "SessionStart" and reply.strip() != b"{}":
        import json

        from tokenbudget import hook

        try:
            said = json.loads(reply)
        except ValueError:
            said = {"unreadable": reply[:200].decode("utf-8", "replace")}
        reply = json.dumps(hook.quiet_start(said if isinstance(said, dict) else {})).encode()
    sys.stdout.buffer.write(reply + b"\n")
    sys.stdout.flush()


def _late(event: str) -> bytes:
    """The answer when the answerer took the event but did not answer in time: deciding it
    here as well could count it twice (or, seen as a second registration, let it through), so
    it is our failure: allowed and said, or with fail_closed a prompt refused."""
    import json

    from tokenbudget import hook

    fail_closed = False
    try:
        from tokenbudget import config as config_mod

        fail_closed = config_mod.load_config().fail_closed
    except Exception:
        pass
    why = f"the resident answerer did not answer within {relay.TIMEOUT:g} s"
    return json.dumps(hook.fail(event, why, fail_closed)).encode()
