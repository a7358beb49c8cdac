"""Loading the runtime's hooks from its settings (`STEWARD_HOOKS`).

The setting is a comma-separated list, in the order the hooks run. Each entry is either
- a dotted path `package.module:attribute`, or
- a name: a hook the runtime ships (`audit`, the audit log) or one an installed package declares in the
  `steward.hooks` entry-point group (`[project.entry-points."steward.hooks"] name = "package.module:attribute"`).

The attribute is a `Hook` subclass or a function (either called with no arguments and returning a `Hook`), or a
`Hook` instance. An entry that cannot be loaded raises `HookLoadError`, naming the entry and why: the runtime does
not start without a hook it was told to run (a missing policy must never be skipped silently).
"""

from __future__ import annotations

import importlib
from importlib import metadata

from services.runtime.hooks import AuditLog, Hook

ENTRY_POINT_GROUP = "steward.hooks"
# The hooks the runtime ships, by name; looked up before the entry points (the same names cannot be shadowed).
BUILT_IN: dict[str, str] = {"audit": f"{AuditLog.__module__}:{AuditLog.__qualname__}"}


class HookLoadError(ValueError):
    """A hook named in `STEWARD_HOOKS` cannot be loaded; the message names the entry and why."""


def entries(setting: str) -> list[str]:
    """The entries of the setting, in order (blank ones dropped)."""
    return [entry.strip() for entry in setting.split(",") if entry.strip()]


def load_hooks(setting: str) -> list[Hook]:
    """Every hook the setting names, loaded, in order; `HookLoadError` for the first that cannot be."""
    return [load_hook(entry) for entry in entries(setting)]


def load_hook(entry: str) -> Hook:
    target = entry if ":" in entry else _named(entry)
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise HookLoadError(f"hook {entry!r}: expected `package.module:attribute` or a hook's name")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import is the entry's error, said as such
        raise HookLoadError(f"hook {entry!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise HookLoadError(f"hook {entry!r}: {module_name} has no attribute {attribute!r}") from None
    return _instance(entry, found)


def _named(name: str) -> str:
    """The dotted path a hook's name stands for: a built-in, else an installed `steward.hooks` entry point."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    installed = {point.name: point.value for point in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name in installed:
        return installed[name]
    known = ", ".join(sorted({*BUILT_IN, *installed}))
    raise HookLoadError(
        f"hook {name!r}: no built-in hook or installed {ENTRY_POINT_GROUP!r} entry point has that name "
        f"(known: {known}); a dotted path is written `package.module:attribute`"
    )


def _instance(entry: str, found: object) -> Hook:
    if isinstance(found, Hook):
        return found
    if not callable(found):
        raise HookLoadError(f"hook {entry!r}: {found!r} is neither a Hook, a Hook class nor a factory")
    try:
        made = found()
    except Exception as exc:  # a factory's failure is the entry's error, said as such
        raise HookLoadError(f"hook {entry!r}: making the hook failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, Hook):
        raise HookLoadError(
            f"hook {entry!r}: made a {type(made).__name__}, not a Hook (subclass services.runtime.hooks.Hook)"
        )
    return made
