"""The store service: users, tokens, agents, conversations, messages, runs and run events."""
