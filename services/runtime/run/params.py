"""What a model step asks the provider for, from the agent's model parameters and the run's limits (ADR 0019).

- **max_tokens**: the agent's `model_params.max_output_tokens`, else the deployment default
  (`RuntimeSettings.default_max_output_tokens`); lowered to what the run's token limit (`limits.max_tokens`, the
  run's over the agent's) has left when that is less. The step is **capped** when its max_tokens came from a limit
  the agent or the run set (the agent's max_output_tokens, or the run's token limit): a max-tokens stop then ends
  the run `incomplete(max_tokens)`. Under the deployment default alone, a max-tokens stop is an answer cut at the
  deployment's cap: the run completes, with the stop reason saying so.
- **temperature**: the agent's, when it sets one; else the provider's default.
- **reasoning_budget_tokens**: the agent's reasoning effort as a share of the step's max_tokens (low a quarter,
  medium a half, high three quarters), at least `MIN_REASONING_TOKENS` (Anthropic's smallest thinking budget), and
  below max_tokens: a step too small for that asks for no reasoning. The Anthropic adapter sends it as the thinking
  budget; the OpenAI adapter turns the share back into `reasoning_effort`.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.agents import AgentSpec, Limits
from steward.common.v1 import usage_pb2
from steward.store.v1 import agent_pb2

MIN_REASONING_TOKENS = 1024
REASONING_SHARES = {
    agent_pb2.REASONING_EFFORT_LOW: 0.25,
    agent_pb2.REASONING_EFFORT_MEDIUM: 0.5,
    agent_pb2.REASONING_EFFORT_HIGH: 0.75,
}


@dataclass(frozen=True)
class StepParams:
    max_tokens: int
    capped: bool  # max_tokens was set by the agent's max_output_tokens or the run's token limit
    temperature: float | None
    reasoning_budget_tokens: int


def reasoning_budget(effort: agent_pb2.ReasoningEffort.ValueType, max_tokens: int) -> int:
    """The reasoning tokens a step of `max_tokens` may spend for `effort`; 0 for none."""
    share = REASONING_SHARES.get(effort)
    if share is None:
        return 0
    budget = max(MIN_REASONING_TOKENS, int(max_tokens * share))
    return budget if budget < max_tokens else 0


def step_params(agent: AgentSpec, limits: Limits, usage: usage_pb2.Usage, default_max_tokens: int) -> StepParams:
    """The parameters of the run's next model step (see the module docstring)."""
    params = agent.model_params
    max_tokens, capped = default_max_tokens, False
    if params.max_output_tokens > 0:
        max_tokens, capped = params.max_output_tokens, True
    if limits.max_tokens:
        left = max(1, limits.max_tokens - usage.input_tokens - usage.output_tokens)
        if left <= max_tokens:
            max_tokens, capped = left, True
    temperature = params.temperature if params.HasField("temperature") else None
    return StepParams(max_tokens, capped, temperature, reasoning_budget(params.reasoning_effort, max_tokens))
