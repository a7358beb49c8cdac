"""The runtime's pure rules: what a conversation says is still owed, and which limits apply."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from services.runtime.agents import AgentSpec, default_agent, limits_for
from services.runtime.run.history import pending_calls, result_message
from services.runtime.settings import RuntimeSettings
from steward.common.v1 import content_pb2 as c
from steward.common.v1 import limits_pb2
from steward.store.v1 import agent_pb2, run_pb2


def call(call_id: str, name: str = "notes.create_note") -> c.ContentBlock:
    return c.ContentBlock(tool_call=c.ToolCallBlock(id=call_id, name=name, arguments_json="{}"))


def assistant(*blocks: c.ContentBlock) -> c.ChatMessage:
    return c.ChatMessage(role=c.ROLE_ASSISTANT, content=list(blocks))


def user(text: str) -> c.ChatMessage:
    return c.ChatMessage(role=c.ROLE_USER, content=[c.ContentBlock(text=c.TextBlock(text=text))])


def test_the_last_assistant_messages_unanswered_calls_are_pending() -> None:
    history = [
        user("hi"),
        assistant(call("old")),
        result_message("old", "done", is_error=False),
        user("more"),
        assistant(c.ContentBlock(text=c.TextBlock(text="Let me")), call("a"), call("b"), call("c")),
        result_message("b", "ok", is_error=False),
    ]
    pending = pending_calls(history)
    assert [p.id for p in pending.calls] == ["a", "c"]
    assert pending.answered == 1
    history.append(result_message("a", "no", is_error=True))
    history.append(result_message("c", "ok", is_error=False))
    assert pending_calls(history).calls == []


def test_a_conversation_without_tool_calls_owes_nothing() -> None:
    assert pending_calls([user("hi"), assistant(c.ContentBlock(text=c.TextBlock(text="hello")))]).calls == []
    assert pending_calls([]).calls == []


def test_run_limits_override_agent_limits_override_defaults() -> None:
    settings = RuntimeSettings.model_validate({"internal_secret": "s" * 40, "default_max_steps": 7})
    agent = default_agent(settings)
    agent = AgentSpec(
        **{**agent.__dict__, "limits": limits_pb2.RunLimits(max_steps=3, max_tokens=500, timeout=Duration(seconds=9))}
    )
    run = run_pb2.Run(limits=limits_pb2.RunLimits(max_tokens=100, tool_timeout=Duration(seconds=2, nanos=500_000_000)))
    limits = limits_for(agent, run, settings)
    assert (limits.max_steps, limits.max_tokens, limits.timeout, limits.tool_timeout) == (3, 100, 9.0, 2.5)
    assert limits.first_token_timeout == settings.default_first_token_timeout
    assert limits_for(default_agent(settings), run_pb2.Run(), settings).max_steps == 7


def test_the_default_wall_clock_limit_is_longer_for_autonomous_runs() -> None:
    settings = RuntimeSettings.model_validate(
        {"internal_secret": "s" * 40, "default_run_timeout": 30, "default_autonomous_run_timeout": 600}
    )
    agent = default_agent(settings)
    autonomous = run_pb2.Run(mode=agent_pb2.RUN_MODE_AUTONOMOUS)
    assert limits_for(agent, run_pb2.Run(), settings).timeout == 30.0
    assert limits_for(agent, autonomous, settings).timeout == 600.0
    autonomous_agent = AgentSpec(**{**agent.__dict__, "mode": agent_pb2.RUN_MODE_AUTONOMOUS})
    assert limits_for(autonomous_agent, run_pb2.Run(), settings).timeout == 600.0
    interactive_run = run_pb2.Run(mode=agent_pb2.RUN_MODE_INTERACTIVE)
    assert limits_for(autonomous_agent, interactive_run, settings).timeout == 30.0  # the run's mode decides
    limited = run_pb2.Run(mode=agent_pb2.RUN_MODE_AUTONOMOUS, limits=limits_pb2.RunLimits(timeout=Duration(seconds=5)))
    assert limits_for(agent, limited, settings).timeout == 5.0  # a limit set on the run still wins


def test_the_pause_deadline_is_the_runs_over_the_agents_over_the_default_for_what_the_run_waits_for() -> None:
    settings = RuntimeSettings.model_validate(
        {
            "internal_secret": "s" * 40,
            "default_confirmation_pause_timeout": 600,
            "default_client_tool_pause_timeout": 60,
        }
    )
    confirmation, client_tool = run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION, run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL
    agent = default_agent(settings)
    defaults = limits_for(agent, run_pb2.Run(), settings)
    assert (defaults.pause_timeout(confirmation), defaults.pause_timeout(client_tool)) == (600.0, 60.0)
    patient = AgentSpec(**{**agent.__dict__, "limits": limits_pb2.RunLimits(pause_timeout=Duration(seconds=120))})
    by_agent = limits_for(patient, run_pb2.Run(), settings)
    assert (by_agent.pause_timeout(confirmation), by_agent.pause_timeout(client_tool)) == (120.0, 120.0)
    hasty = run_pb2.Run(limits=limits_pb2.RunLimits(pause_timeout=Duration(nanos=300_000_000)))
    assert limits_for(patient, hasty, settings).pause_timeout(client_tool) == 0.3
    unbounded = RuntimeSettings.model_validate({"internal_secret": "s" * 40, "default_client_tool_pause_timeout": 0})
    assert limits_for(agent, run_pb2.Run(), unbounded).pause_timeout(client_tool) == 0.0  # no deadline
