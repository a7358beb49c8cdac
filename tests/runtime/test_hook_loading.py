"""Loading the runtime's hooks from its settings (services/runtime/hook_loading.py), with no stack.

- `STEWARD_HOOKS` defaults to the built-in audit log, loaded by name like any other hook.
- A dotted path names a Hook class, a factory or a Hook instance; a name, an installed `steward.hooks` entry point
  (here a real distribution's metadata on sys.path, as an installed package has it).
- Every entry that cannot be loaded is an error naming the entry and why, and the runtime does not start.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from services.runtime.hook_loading import ENTRY_POINT_GROUP, HookLoadError, load_hooks
from services.runtime.hooks import AuditLog, Hook
from services.runtime.server import create_server
from services.runtime.settings import RuntimeSettings
from tests.runtime.hook_policy import NotesPolicy

# Something in this module that is not a hook, for the entries that name it.
NOT_A_HOOK = 42
A_HOOK = NotesPolicy()


def not_a_factory() -> str:
    return "a string"


def failing_factory() -> Hook:
    raise RuntimeError("no policy server configured")


def test_the_default_setting_loads_the_audit_log_by_name() -> None:
    default = RuntimeSettings.model_fields["hooks"].default
    assert default == "audit"
    [audit] = load_hooks(default)
    assert type(audit) is AuditLog
    assert load_hooks("") == []  # no hooks at all, when the operator says so


def test_dotted_paths_name_a_factory_a_class_or_an_instance_in_order() -> None:
    me = __name__
    hooks = load_hooks(f" tests.runtime.hook_policy:policy, audit,{me}:A_HOOK , tests.runtime.hook_policy:NotesPolicy,")
    assert [type(hook) for hook in hooks] == [NotesPolicy, AuditLog, NotesPolicy, NotesPolicy]
    assert hooks[2] is A_HOOK
    assert hooks[0] is not hooks[3]  # a factory or a class makes a hook of its own


def test_a_name_is_an_installed_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed distribution's metadata, as pip leaves it: the import system finds it on sys.path.
    info = tmp_path / "acme_policies-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-policies\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nacme-notes = tests.runtime.hook_policy:policy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [audit, policy] = load_hooks("audit,acme-notes")
    assert (type(audit), type(policy)) == (AuditLog, NotesPolicy)


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("tests.runtime.absent_module:policy", "cannot import tests.runtime.absent_module: ModuleNotFoundError"),
        ("tests.runtime.hook_policy:absent", "tests.runtime.hook_policy has no attribute 'absent'"),
        ("acme-absent", "no built-in hook or installed 'steward.hooks' entry point has that name (known: audit"),
        (":policy", "expected `package.module:attribute` or a hook's name"),
        (f"{__name__}:NOT_A_HOOK", "42 is neither a Hook, a Hook class nor a factory"),
        (f"{__name__}:not_a_factory", "made a str, not a Hook"),
        (f"{__name__}:failing_factory", "making the hook failed: RuntimeError: no policy server configured"),
    ],
)
def test_an_entry_that_cannot_be_loaded_is_an_error_naming_it(setting: str, why: str) -> None:
    with pytest.raises(HookLoadError) as caught:
        load_hooks(f"audit,{setting}")
    assert str(caught.value).startswith(f"hook {setting!r}: ")
    assert why in str(caught.value)


async def test_the_runtime_does_not_start_with_a_hook_it_cannot_load(tmp_path: Path) -> None:
    settings = RuntimeSettings.model_validate(
        {
            "internal_secret": secrets.token_urlsafe(32),
            "data_dir": tmp_path,
            "hooks": "audit,tests.runtime.absent_module:policy",
        }
    )
    with pytest.raises(HookLoadError, match=r"hook 'tests.runtime.absent_module:policy': cannot import"):
        await create_server(settings, "127.0.0.1:0")
    assert os.listdir(tmp_path) == []  # before anything: not even the replica's name was written


def test_the_documented_example_is_the_module_the_tests_load() -> None:
    repo = Path(__file__).resolve().parents[2]
    guide = (repo / "docs" / "hooks.md").read_text()
    example = guide.split("## A complete example", 1)[1].split("```python\n", 1)[1].split("```\n", 1)[0]
    assert example == (repo / "tests" / "runtime" / "hook_policy.py").read_text()
    assert "STEWARD_HOOKS=audit,tests.runtime.hook_policy:policy" in guide
