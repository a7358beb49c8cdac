"""The agent a run follows, and the limits it runs under.

A run names a stored agent (the store's AgentService) or none, in which case
the deployment's default agent from RuntimeSettings is used. Limits are the
agent's, overridden field by field by the run's own, with the deployment's
defaults for whatever neither sets (the pause deadline's default depends on
what the paused run waits for: a confirmation or a client tool's results).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from services.runtime.settings import RuntimeSettings
from steward.agents import DEFAULT_AGENT_NAME as DEFAULT_AGENT_NAME
from steward.common.v1 import limits_pb2
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from steward.store.v1 import store_service_pb2_grpc as store_grpc


@dataclass(frozen=True)
class Limits:
    max_steps: int
    max_tokens: int  # 0: no limit
    max_cost_micros: int  # 0: no limit
    timeout: float  # seconds of running (paused time does not count)
    tool_timeout: float
    first_token_timeout: float
    # Seconds a pause may last, by what the run waits for (0: no deadline).
    confirmation_pause_timeout: float = 0.0
    client_tool_pause_timeout: float = 0.0

    def pause_timeout(self, reason: run_pb2.PauseReason.ValueType) -> float:
        """Seconds a pause for `reason` may last before the run ends expired; 0 for no deadline."""
        if reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL:
            return self.client_tool_pause_timeout
        return self.confirmation_pause_timeout


@dataclass(frozen=True)
class AgentSpec:
    id: str  # "" for the default agent
    system_prompt: str
    model_route: str
    tools: list[str] = field(default_factory=list)  # name patterns
    mode: agent_pb2.RunMode.ValueType = agent_pb2.RUN_MODE_INTERACTIVE
    auto_approved: list[str] = field(default_factory=list)
    always_confirm: list[str] = field(default_factory=list)
    limits: limits_pb2.RunLimits = field(default_factory=limits_pb2.RunLimits)
    model_params: agent_pb2.ModelParams = field(default_factory=agent_pb2.ModelParams)
    version: int = 0  # the stored agent's version; 0 for the default agent


def default_agent(settings: RuntimeSettings) -> AgentSpec:
    return AgentSpec(
        id="",
        system_prompt=settings.default_system_prompt,
        model_route=settings.default_model_route,
        tools=list(settings.default_agent_tools),
    )


def from_stored(agent: agent_pb2.Agent, settings: RuntimeSettings) -> AgentSpec:
    policy = agent.approval_policy
    return AgentSpec(
        id=agent.id,
        system_prompt=agent.system_prompt,
        model_route=agent.model_route or settings.default_model_route,
        tools=list(agent.tools),
        mode=policy.mode or agent_pb2.RUN_MODE_INTERACTIVE,
        auto_approved=list(policy.auto_approved_tools),
        always_confirm=list(policy.always_confirm_tools),
        limits=agent.limits,
        model_params=agent.model_params,
        version=agent.version,
    )


async def load_agent(
    agents: store_grpc.AgentServiceAsyncStub, run: run_pb2.Run, settings: RuntimeSettings
) -> AgentSpec:
    """The run's agent: the stored one it names, else the default agent."""
    if not run.agent_id:
        return default_agent(settings)
    reply = await agents.GetAgent(store_pb.GetAgentRequest(id=run.agent_id))
    return from_stored(reply.agent, settings)


def _seconds(duration: object) -> float:
    seconds = getattr(duration, "seconds", 0) + getattr(duration, "nanos", 0) / 1e9
    return float(seconds)


def limits_for(agent: AgentSpec, run: run_pb2.Run, settings: RuntimeSettings) -> Limits:
    """Run limits over agent limits over the deployment's defaults, field by field."""

    def pick(name: str, default: float) -> float:
        for source in (run.limits, agent.limits):
            if getattr(source, name):
                return float(getattr(source, name))
        return default

    def pick_duration(
        name: Literal["timeout", "tool_timeout", "first_token_timeout", "pause_timeout"], default: float
    ) -> float:
        for source in (run.limits, agent.limits):
            if source.HasField(name):
                return _seconds(getattr(source, name))
        return default

    autonomous = (run.mode or agent.mode) == agent_pb2.RUN_MODE_AUTONOMOUS
    timeout = settings.default_autonomous_run_timeout if autonomous else settings.default_run_timeout
    return Limits(
        max_steps=int(pick("max_steps", settings.default_max_steps)),
        max_tokens=int(pick("max_tokens", 0)),
        max_cost_micros=int(pick("max_cost_micros", 0)),
        timeout=pick_duration("timeout", timeout),
        tool_timeout=pick_duration("tool_timeout", settings.default_tool_timeout),
        first_token_timeout=pick_duration("first_token_timeout", settings.default_first_token_timeout),
        # One pause deadline from the run or its agent, else the deployment's default for what the run waits for.
        confirmation_pause_timeout=pick_duration("pause_timeout", settings.default_confirmation_pause_timeout),
        client_tool_pause_timeout=pick_duration("pause_timeout", settings.default_client_tool_pause_timeout),
    )
