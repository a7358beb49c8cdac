"""Chaos scenarios: the stack under faults (dropped connections, restarts), measured from outside, over HTTP."""
