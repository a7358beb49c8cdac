"""The runtime service: the server-side agent loop shared by every surface."""
