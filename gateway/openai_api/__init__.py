"""The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`, over the same runs and logs.

- **Models** are agents: a model's `id` is the name of one of the caller's agents; `steward` is the
  built-in default agent (runs with no agent id), unless the caller has an agent of that name.
- **A request is a run.** A new conversation holds the request's history (system and developer
  messages are dropped: the agent's system prompt applies) and a run answers its last user message.
- **Client tools.** `tools` are offered as the run's client tools; a run that pauses for them ends the
  completion with `finish_reason: "tool_calls"`, each id `call_<run id>_<call id>`. A follow-up ending
  with `role: tool` results for those ids submits them to that paused run and answers with the rest.
- **Confirmations.** A run that pauses for a write ends with `finish_reason: "stop"` and a notice naming
  the confirmation and where to decide it; a follow-up (the conversation sent back plus one more user
  message) answers with the rest of the run once the decision is made.

Errors use OpenAI's shape (errors.py); `gateway.run_log` reads the run's log, requests.py reads the body.
"""

from gateway.openai_api.routes import routes

__all__ = ["routes"]
