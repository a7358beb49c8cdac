"""Runtime service settings, including the built-in default agent."""

from __future__ import annotations

from pydantic import Field

from steward.settings import CommonSettings


class RuntimeSettings(CommonSettings):
    """Runtime settings: leases, the default agent (runs that name no stored agent) and default limits."""

    # This runtime replica's name as a run lease holder; it must stay the same across restarts and differ between
    # replicas: a restarted replica takes back the runs its name holds at once, without waiting for their leases.
    # Empty: the name kept in `<data_dir>/runtime-replica-id` (`runtime-` and 12 random hex, written on the first
    # start), so each replica needs a data directory of its own that survives restarts. On Kubernetes, set it
    # from the pod's name (downward API `metadata.name`) in a StatefulSet; a Deployment's pod gets a new name on
    # each restart, and its runs then wait for their leases to expire.
    replica_id: str = ""
    # Seconds a run's lease lasts; the replica renews it every third of that (every 2.7 s at 8: a renewal may be
    # more than 5 s late, or one may fail, before the lease expires). Another replica takes a dead replica's runs
    # within `lease_seconds` + `sweep_interval` (10 s by default); a restarted replica takes its own back at once.
    lease_seconds: int = 8
    # The model route of the built-in default agent, and of agents that name none. "auto" (the provider's): the first
    # real provider with a key for the caller (theirs or the instance's), else the offline demo model; set a route
    # (such as "openai/gpt-4o-mini", "smart" or "demo") to pin it.
    default_model_route: str = "auto"
    # The built-in default agent's system prompt.
    default_system_prompt: str = "You are Steward's default agent. Answer helpfully and concisely."
    # The output tokens (reasoning included) a model step asks for when its agent sets no `max_output_tokens`; a
    # run's token limit lowers it to what the limit has left. A step that stops at this deployment default (no
    # limit of the agent or run was the cause) completes the run, with stop reason `max_tokens` (ADR 0019).
    default_max_output_tokens: int = Field(default=4096, ge=1, le=200_000)
    # Tool name patterns the default agent may use.
    default_agent_tools: list[str] = Field(default_factory=lambda: ["time.now", "calc"])
    # Limits for runs whose agent and request set none (seconds for times; the timeout counts running time).
    default_max_steps: int = 10
    default_run_timeout: float = 30.0  # interactive runs: a person is usually waiting
    default_autonomous_run_timeout: float = 600.0  # autonomous runs: nobody waits on each step
    default_tool_timeout: float = 30.0
    default_first_token_timeout: float = 30.0
    # A tool's result longer than this (characters) is cut to it, with a note saying so, before the model and
    # the log see it; a client tool's longer result is refused.
    max_tool_result_chars: int = 100_000
    # Text deltas after the first are coalesced into one event per this many seconds (at most): shorter than a
    # model's usual gap between tokens, so readers see the gaps the model made (bench gateway's inter-chunk gaps).
    text_flush_interval: float = 0.01
    # Confirmations: seconds before an unanswered one is auto-rejected (0: the confirm service's default).
    confirmation_ttl: float = 0.0
    # Pause deadlines (docs/adr/0018-pause-deadlines.md) for runs whose agent and request set no `pause_timeout`:
    # seconds a run may stay paused for a person's decision (a day) before it ends `expired` (its pending
    # confirmations cancelled); 0: no deadline (the run waits until it is resumed or cancelled). A confirmation's
    # own expiry (`confirmation_ttl`, 15 minutes by default) comes first: it is rejected, the model is told, and
    # the run goes on.
    default_confirmation_pause_timeout: float = Field(default=86_400.0, ge=0)
    # The same for a client tool's results (an hour: the caller's program owes them, not a person).
    default_client_tool_pause_timeout: float = Field(default=3_600.0, ge=0)
    # Seconds between sweeps for decided confirmations, for runs whose lease expired (with `lease_seconds`, it
    # bounds how late another replica takes a dead replica's runs) and for paused runs past their pause deadline
    # (a replica also sweeps at the deadline of each pause it made itself).
    sweep_interval: float = 2.0
    # Runs this replica drives at once; more wait (queued, or decided and unacknowledged) for a later sweep.
    max_active_runs: int = 64
    # The runtime's hooks, in the order they run (docs/hooks.md): comma-separated, each a dotted path
    # `package.module:attribute` (a Hook class, a function returning a Hook, or a Hook) or the name of a hook the
    # runtime ships (`audit`: the audit log) or an installed package declares in the `steward.hooks` entry-point
    # group. Empty: no hooks. A hook that cannot be loaded stops the runtime at start.
    hooks: str = "audit"
    # YAML file configuring MCP tool servers (docs/adr/0008-tools.md); empty means built-in tools only.
    tools_file: str = ""
    # Seconds start-up waits for the tool servers to connect before serving without the late ones.
    tools_ready_timeout: float = 15.0
