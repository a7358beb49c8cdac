"""The agent loop and its parts: claims, driving a run, model steps, tool calls, the event writer."""
