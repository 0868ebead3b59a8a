"""The harness works, and the real Claude Code still behaves the way our enforcement assumes.

Each test runs the pinned binary against the fake API; when an assertion here breaks after a
Claude Code upgrade, a fact in the hook or transcript code needs another look.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    ClaudeRun,
    HookRecorder,
    MakeScript,
    RunClaude,
    assistant_usage,
    hook_settings,
    project_dir_name,
    read_jsonl,
)
from .fake_api import USAGE_FIELDS, FakeAnthropic, ServedRequest, iter_truth

pytestmark = pytest.mark.e2e

ALL_EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SessionEnd")


def served_usage(requests: list[ServedRequest]) -> dict[tuple[str, str], dict[str, int]]:
    """What the fake served, keyed like assistant_usage()."""
    return {(r.id, r.request_id): r.usage() for r in requests}


def assert_ok(run: ClaudeRun) -> dict[str, Any]:
    """The run exited 0 and printed a result object; returns it."""
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    assert run.output is not None, run.proc.stdout[-3000:]
    assert run.output["type"] == "result"
    return run.output


def last_cost_state(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Token totals of the last cost-state entry, summed over models, in usage field names."""
    states = [line for line in lines if line.get("type") == "cost-state"]
    assert states, "no cost-state entry in the transcript"
    totals = dict.fromkeys(USAGE_FIELDS, 0)
    for usage in states[-1]["modelUsage"].values():
        totals["input_tokens"] += usage["inputTokens"]
        totals["cache_creation_input_tokens"] += usage["cacheCreationInputTokens"]
        totals["cache_read_input_tokens"] += usage["cacheReadInputTokens"]
        totals["output_tokens"] += usage["outputTokens"]
    return totals


# -- a. plain prompt ------------------------------------------------------------------------------


def test_plain_prompt_transcript_matches_what_was_served(
    run_claude: RunClaude, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    # Underscore, dot and space in the cwd pin down how the projects folder is named.
    cwd = tmp_path / "my_project dir.v2"
    run = run_claude("Say hello.", cwd=cwd)
    out = assert_ok(run)
    assert out["result"] == "Answer 1."
    assert out["terminal_reason"] == "completed"
    assert out["is_error"] is False
    assert out["num_turns"] == 1

    [served] = fake_api.requests
    assert (served.prompt, served.kind, served.sub) == ("Say hello.", "text", False)
    written = sorted((run.home / ".claude" / "projects").glob(f"*/{run.session_id}.jsonl"))
    assert written == [run.transcript_path]
    assert run.project_dir.name == project_dir_name(cwd)
    assert "_" not in run.project_dir.name and " " not in run.project_dir.name

    lines = run.transcript()
    assert assistant_usage(lines) == served_usage(fake_api.requests)
    # Two content blocks ("Step 1." and "Answer 1.") make two assistant lines, same usage.
    assert sum(1 for line in lines if line["type"] == "assistant") == 2
    assert last_cost_state(lines) == fake_api.total_usage()
    assert {k: out["usage"][k] for k in USAGE_FIELDS} == served.usage()
    assert out["modelUsage"][served.model]["inputTokens"] == served.input_tokens
    assert {line["sessionId"] for line in lines if "sessionId" in line} == {run.session_id}


def test_fake_writes_truth_jsonl(
    run_claude: RunClaude, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    assert_ok(run_claude("Say hello."))
    truth = list(iter_truth(fake_api.write_truth(tmp_path / "t.jsonl")))
    assert truth == [
        {
            "id": "msg_fake_00001",
            "sub": False,
            "model": fake_api.requests[0].model,
            "input_tokens": 901,
            "cache_creation_input_tokens": 101,
            "cache_read_input_tokens": 2010,
            "output_tokens": 41,
            "session": fake_api.requests[0].session_id,
        }
    ]
    assert fake_api.total_tokens() == 901 + 101 + 2010 + 41
    # Only the streamed Messages call reached the fake: no count_tokens, no telemetry.
    assert [(c.method, c.path) for c in fake_api.calls] == [("POST", "/v1/messages?beta=true")]


def _post(fake: FakeAnthropic, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    request = urllib.request.Request(
        fake.base_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), str(response.headers.get("request-id"))


def test_fake_answers_non_streaming_and_other_paths(fake_api: FakeAnthropic) -> None:
    # Claude Code 2.1.328 only streams, but a non-streaming call must be answered and counted.
    body = {"model": "m", "messages": [{"role": "user", "content": "please LOOP 1"}]}
    message, request_id = _post(fake_api, "/v1/messages", body)
    assert (message["id"], request_id) == ("msg_fake_00001", "req_fake_00001")
    assert message["usage"] == fake_api.requests[0].usage()
    assert message["content"][1]["input"]["command"] == "echo step 1"
    assert fake_api.requests[0].streamed is False
    assert _post(fake_api, "/v1/messages/count_tokens", body)[0] == {"input_tokens": 1000}
    assert _post(fake_api, "/api/anything", {})[0] == {}
    assert len(fake_api.requests) == 1


# -- b. loops and subagents -----------------------------------------------------------------------


def test_loop_makes_one_request_per_tool_result_plus_one(
    run_claude: RunClaude, fake_api: FakeAnthropic
) -> None:
    run = run_claude("please LOOP 3")
    out = assert_ok(run)
    served = fake_api.requests
    assert [r.kind for r in served] == ["bash", "bash", "bash", "text"]
    assert out["result"] == "Answer 4."
    assert out["num_turns"] == 4
    lines = run.transcript()
    results = [
        block["content"]
        for line in lines
        if line["type"] == "user" and isinstance(line["message"]["content"], list)
        for block in line["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert results == ["step 1", "step 2", "step 3"]
    assert assistant_usage(lines) == served_usage(served)
    assert last_cost_state(lines) == fake_api.total_usage()
    # In a multi-request turn the JSON output's usage is the turn's total.
    assert {k: out["usage"][k] for k in USAGE_FIELDS} == fake_api.total_usage()


def test_a_subagents_hooks_carry_its_parent_sessions_transcript_and_its_agent_id(
    run_claude: RunClaude, hook_recorder: HookRecorder
) -> None:
    # hook._goes_on relies on it: after /clear, a background subagent's hooks still name the
    # ended session's transcript, and only their agent_id tells them from its main agent's.
    settings = hook_settings(dict.fromkeys(("PostToolBatch", "SubagentStop"),
                                           hook_recorder.command))
    run = run_claude("please AGENT SUBLOOP 1", settings=settings,
                     allowed_tools=("Bash", "Agent"))
    assert_ok(run)
    [sub_path] = run.subagent_transcripts()
    agent = sub_path.stem.removeprefix("agent-")
    seen = [(c["stdin"]["hook_event_name"], c["stdin"].get("agent_id")) for c in
            hook_recorder.calls()]
    assert sorted(seen, key=str) == sorted([("PostToolBatch", None), ("PostToolBatch", agent),
                                            ("SubagentStop", agent)], key=str)
    for call in hook_recorder.calls():
        assert call["stdin"]["session_id"] == run.session_id
        assert Path(call["stdin"]["transcript_path"]) == run.transcript_path


def test_runaway_loop_is_cut_off_by_max_requests(
    run_claude: RunClaude, fake_api: FakeAnthropic
) -> None:
    fake_api.max_requests = 5
    out = assert_ok(run_claude("please LOOP forever", timeout=60))
    assert [r.kind for r in fake_api.requests] == ["bash"] * 5 + ["text"]
    assert out["result"] == "Answer 6."


def test_agent_usage_lives_only_in_the_subagent_transcript(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_recorder: HookRecorder
) -> None:
    events = ("UserPromptSubmit", "SubagentStart", "SubagentStop")
    settings = hook_settings(dict.fromkeys(events, hook_recorder.command))
    run = run_claude("please AGENT", settings=settings)
    out = assert_ok(run)
    served = fake_api.requests
    main = [r for r in served if not r.sub]
    [sub_request] = [r for r in served if r.sub]
    assert sub_request.kind == "text"
    assert main[0].kind == "agent"
    # The background subagent races the main agent: its "agent launched" tool result and the
    # completion notification go out in two requests or, when the subagent wins, in one.
    assert [r.kind for r in main[1:]] in (["text"], ["text", "text"])

    [sub_path] = run.subagent_transcripts()
    sub_lines = read_jsonl(sub_path)
    assert assistant_usage(sub_lines) == served_usage([sub_request])
    assert all(line.get("isSidechain") is True for line in sub_lines if "isSidechain" in line)
    assert {line["sessionId"] for line in sub_lines if "sessionId" in line} == {run.session_id}
    assert sub_path.with_suffix(".meta.json").exists()

    main_lines = run.transcript()
    assert assistant_usage(main_lines) == served_usage(main)
    # cost-state covers the whole process, subagent included.
    assert last_cost_state(main_lines) == fake_api.total_usage()
    assert out["subagent_stats"]["spawned"] == 1

    [start] = hook_recorder.inputs("SubagentStart")
    [stop] = hook_recorder.inputs("SubagentStop")
    assert start["agent_type"] == stop["agent_type"] == "general-purpose"
    assert sub_path.name == f"agent-{start['agent_id']}.jsonl"
    assert Path(stop["agent_transcript_path"]) == sub_path
    # The finished background agent comes back as a new prompt: UserPromptSubmit fires for a
    # notification the user never typed, and it carries the subagent's token total.
    prompts = [p["prompt"] for p in hook_recorder.inputs("UserPromptSubmit")]
    assert prompts[0] == "please AGENT"
    [notice] = prompts[1:]
    assert notice.startswith("<task-notification>")
    assert f"<subagent_tokens>{sub_request.total_tokens()}</subagent_tokens>" in notice


# -- c/d. blocking --------------------------------------------------------------------------------


def test_user_prompt_submit_block_makes_no_request(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_script: MakeScript
) -> None:
    block = hook_script(
        "block.sh", """cat >/dev/null\necho '{"decision":"block","reason":"over budget"}'\n"""
    )
    run = run_claude("Say hello.", settings=hook_settings({"UserPromptSubmit": str(block)}))
    out = assert_ok(run)
    assert fake_api.requests == []
    assert out["result"] == (
        "UserPromptSubmit operation blocked by hook:\nover budget\n\nOriginal prompt: Say hello."
    )
    # A blocked prompt is no error and no turn; unlike a stopped turn, the output has no
    # terminal_reason at all.
    assert (out["is_error"], out["subtype"], out["num_turns"]) == (False, "success", 0)
    assert out["stop_reason"] is None
    assert "terminal_reason" not in out
    assert out["modelUsage"] == {}
    # The transcript keeps the refusal as a system entry, and no user or assistant entry.
    lines = run.transcript()
    notes = [line for line in lines if line["type"] == "system"]
    assert [(n["subtype"], n["content"]) for n in notes] == [("informational", out["result"])]
    assert not [line for line in lines if line["type"] in ("user", "assistant")]


def _stop_hook(hook_script: MakeScript, *, stop: bool, deny: bool) -> str:
    reply: dict[str, Any] = {}
    if stop:
        reply.update({"continue": False, "stopReason": "stop: budget exhausted"})
    if deny:
        reply["hookSpecificOutput"] = {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": "deny: budget exhausted",
        }
    script = hook_script(f"pre-{stop}-{deny}.sh", f"cat >/dev/null\necho '{json.dumps(reply)}'\n")
    return str(script)


def test_pre_tool_use_stop_and_deny_ends_a_runaway_loop(
    run_claude: RunClaude,
    fake_api: FakeAnthropic,
    hook_script: MakeScript,
    hook_recorder: HookRecorder,
) -> None:
    fake_api.bash_command = "echo step {step} >> ran.txt"
    settings = hook_settings(
        {
            "PreToolUse": _stop_hook(hook_script, stop=True, deny=True),
            "PostToolUse": hook_recorder.command,
        },
        matcher="*",
    )
    run = run_claude("please LOOP forever", settings=settings, timeout=60)
    out = assert_ok(run)
    assert out["terminal_reason"] == "hook_stopped"
    assert len(fake_api.requests) == 1
    assert not (run.cwd / "ran.txt").exists()
    assert hook_recorder.calls("PostToolUse") == []
    # In print mode the stop reason reaches neither the result nor an error flag.
    assert (out["result"], out["is_error"], out["stop_reason"]) == ("", False, "tool_use")
    assert [d["tool_use_id"] for d in out["permission_denials"]] == ["toolu_00001"]
    # The transcript has the deny reason as the tool's error result, and the stop reason
    # in an attachment.
    lines = run.transcript()
    [result] = [
        block
        for line in lines
        if line["type"] == "user" and isinstance(line["message"]["content"], list)
        for block in line["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert result["is_error"] is True
    assert result["content"] == "PreToolUse:Bash hook error: deny: budget exhausted"
    [stopped] = [
        line["attachment"]
        for line in lines
        if line["type"] == "attachment"
        and line["attachment"].get("type") == "hook_stopped_continuation"
    ]
    assert stopped["message"] == "stop: budget exhausted"


def test_pre_tool_use_stop_without_deny_still_runs_the_tool(
    run_claude: RunClaude,
    fake_api: FakeAnthropic,
    hook_script: MakeScript,
    hook_recorder: HookRecorder,
) -> None:
    fake_api.bash_command = "echo step {step} >> ran.txt"
    settings = hook_settings(
        {
            "PreToolUse": _stop_hook(hook_script, stop=True, deny=False),
            "PostToolUse": hook_recorder.command,
        },
        matcher="*",
    )
    run = run_claude("please LOOP forever", settings=settings, timeout=60)
    out = assert_ok(run)
    assert out["terminal_reason"] == "hook_stopped"
    assert len(fake_api.requests) == 1
    assert (run.cwd / "ran.txt").read_text() == "step 1\n"
    assert len(hook_recorder.calls("PostToolUse")) == 1


def test_pre_tool_use_deny_alone_refuses_the_tool_and_goes_on(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_script: MakeScript
) -> None:
    fake_api.bash_command = "echo step {step} >> ran.txt"
    settings = hook_settings(
        {"PreToolUse": _stop_hook(hook_script, stop=False, deny=True)}, matcher="*"
    )
    run = run_claude("please LOOP 2", settings=settings)
    out = assert_ok(run)
    assert out["terminal_reason"] == "completed"
    assert [r.kind for r in fake_api.requests] == ["bash", "bash", "text"]
    assert not (run.cwd / "ran.txt").exists()
    assert [d["tool_name"] for d in out["permission_denials"]] == ["Bash", "Bash"]


# -- e. hook input --------------------------------------------------------------------------------


def test_hook_inputs_and_transcript_state_at_stop(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_recorder: HookRecorder
) -> None:
    settings = hook_settings(dict.fromkeys(ALL_EVENTS, hook_recorder.command), matcher="*")
    run = run_claude("please LOOP 1", settings=settings)
    assert_ok(run)
    calls = hook_recorder.calls()
    events = [c["stdin"]["hook_event_name"] for c in calls]
    assert sorted(events) == sorted(ALL_EVENTS), events
    for call in calls:
        data = call["stdin"]
        assert data["session_id"] == run.session_id
        assert Path(data["transcript_path"]) == run.transcript_path
        assert Path(data["cwd"]) == run.cwd
        assert call["env"]["CLAUDE_PROJECT_DIR"] == str(run.cwd)

    [start] = hook_recorder.inputs("SessionStart")
    assert start["source"] == "startup"
    [prompt] = hook_recorder.inputs("UserPromptSubmit")
    assert prompt["prompt"] == "please LOOP 1"
    [pre] = hook_recorder.inputs("PreToolUse")
    assert pre["tool_name"] == "Bash"
    assert pre["tool_input"]["command"] == "echo step 1"
    assert pre["tool_use_id"] == "toolu_00001"
    [post] = hook_recorder.inputs("PostToolUse")
    assert post["tool_use_id"] == "toolu_00001"
    assert post["tool_response"]["stdout"] == "step 1"
    [stop] = hook_recorder.calls("Stop")
    assert stop["stdin"]["stop_hook_active"] is False
    assert stop["stdin"]["last_assistant_message"] == "Answer 2."
    [end] = hook_recorder.inputs("SessionEnd")
    assert end["reason"] == "other"

    # Transcript writes lag: when Stop runs, the turn's last response is usually NOT on disk
    # yet (seen in most runs of 2.1.328), and a PreToolUse may miss the response that asked
    # for the tool. What is on disk is always a prefix; SessionEnd has seen it all.
    served_keys = [[r.id, r.request_id] for r in fake_api.requests]
    for call in calls:
        keys = call["transcript_assistant_keys"]
        assert keys == served_keys[: len(keys)], call["stdin"]["hook_event_name"]
    assert len(stop["transcript_assistant_keys"]) >= len(served_keys) - 1
    [end_call] = hook_recorder.calls("SessionEnd")
    assert end_call["transcript_assistant_keys"] == served_keys


# -- f. slash commands ----------------------------------------------------------------------------


def test_custom_slash_command_reaches_user_prompt_submit_unexpanded(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_recorder: HookRecorder, tmp_path: Path
) -> None:
    cwd = tmp_path / "project"
    (cwd / ".claude" / "commands").mkdir(parents=True)
    (cwd / ".claude" / "commands" / "test.md").write_text(
        "Run the tests with: $ARGUMENTS. LOOP 2\n"
    )
    settings = hook_settings(
        {"UserPromptSubmit": hook_recorder.command, "UserPromptExpansion": hook_recorder.command}
    )
    run = run_claude("/test --fast", cwd=cwd, settings=settings)
    assert_ok(run)
    [submitted] = hook_recorder.inputs("UserPromptSubmit")
    assert submitted["prompt"] == "/test --fast"
    [expansion] = hook_recorder.inputs("UserPromptExpansion")
    assert expansion["command_name"] == "test"
    assert expansion["command_args"] == "--fast"
    served = fake_api.requests
    assert [r.kind for r in served] == ["bash", "bash", "text"]
    assert served[0].prompt == "Run the tests with: --fast. LOOP 2\n"


# -- sessions that span processes -----------------------------------------------------------------


def test_continue_appends_to_the_same_transcript(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_recorder: HookRecorder
) -> None:
    settings = hook_settings({"SessionStart": hook_recorder.command})
    first = run_claude("please LOOP 1", settings=settings)
    second = run_claude("Say hello.", settings=settings, args=["-c"])
    assert_ok(first)
    out = assert_ok(second)
    assert second.session_id == first.session_id
    assert out["result"] == "Answer 3."
    assert [s["source"] for s in hook_recorder.inputs("SessionStart")] == ["startup", "resume"]
    lines = first.transcript()
    assert assistant_usage(lines) == served_usage(fake_api.requests)
    # cost-state is cumulative over the session's life, across processes.
    assert last_cost_state(lines) == fake_api.total_usage()


def test_compaction_usage_is_only_in_cost_state(
    run_claude: RunClaude, fake_api: FakeAnthropic, hook_recorder: HookRecorder
) -> None:
    events = ("SessionStart", "UserPromptSubmit", "PreCompact", "PostCompact", "SubagentStop")
    settings = hook_settings(dict.fromkeys(events, hook_recorder.command))
    first = run_claude("please LOOP 1", settings=settings)
    assert_ok(first)
    compact = run_claude("/compact keep budget notes", settings=settings, args=["-c"])
    assert_ok(compact)
    served = fake_api.requests
    assert [r.kind for r in served] == ["bash", "text", "compact"]
    lines = first.transcript()
    assert any(line.get("subtype") == "compact_boundary" for line in lines)
    summaries = [line for line in lines if line.get("isCompactSummary")]
    assert len(summaries) == 1
    assert "Fake summary 3" in json.dumps(summaries[0]["message"])
    # The compaction request shows up in no assistant line, but cost-state counts it.
    assert assistant_usage(lines) == served_usage(served[:2])
    assert last_cost_state(lines) == fake_api.total_usage()

    # /compact fires no UserPromptSubmit; it runs as a subagent whose transcript is never written.
    assert [p["prompt"] for p in hook_recorder.inputs("UserPromptSubmit")] == ["please LOOP 1"]
    sources = [s["source"] for s in hook_recorder.inputs("SessionStart")]
    assert sources == ["startup", "resume", "compact"]
    [pre] = hook_recorder.inputs("PreCompact")
    assert (pre["trigger"], pre["custom_instructions"]) == ("manual", "keep budget notes")
    [post] = hook_recorder.inputs("PostCompact")
    assert "Fake summary 3" in post["compact_summary"]
    [stop] = hook_recorder.inputs("SubagentStop")
    assert not Path(stop["agent_transcript_path"]).exists()
    assert first.subagent_transcripts() == []
