"""Wire-faithful fake LLM upstreams (Anthropic Messages, OpenAI Chat Completions) for tests, demos and benchmarks."""

from fakes.script import Behavior, Cut, Fail, FakeToolCall, Malformed, RecordedRequest, Reply, Stall, StreamError
from fakes.upstream import FakeUpstream

__all__ = [
    "Behavior",
    "Cut",
    "Fail",
    "FakeToolCall",
    "FakeUpstream",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
]
