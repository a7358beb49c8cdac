"""Steward's shared library and contracts.

`steward.<area>.v1` packages are generated from `protos/` (never edit them);
the other modules are hand-written code shared by every process.
"""

__all__: list[str] = []
