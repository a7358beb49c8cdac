"""The provider service: the only holder of LLM keys; normalized streaming generation."""
