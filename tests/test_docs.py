"""The documentation stays true to the code: docs/configuration.md is what the settings classes generate, and it
names every `STEWARD_*` variable the hand-written code uses."""

from __future__ import annotations

import re

from tests.support import config_reference

# Folders of hand-written code whose `STEWARD_*` names must all be in the reference.
CODE_ROOTS = ("libs/steward", "services", "gateway", "cli")
NAME = re.compile(r"STEWARD_[A-Z0-9_]+")


def _names_in_code() -> set[str]:
    names: set[str] = set()
    for root in CODE_ROOTS:
        for path in (config_reference.REPO / root).rglob("*.py"):
            if "_pb2" not in path.name:
                names |= set(NAME.findall(path.read_text()))
    return names


def test_the_configuration_reference_is_up_to_date() -> None:
    committed = config_reference.OUTPUT.read_text()
    assert committed == config_reference.render(), "docs/configuration.md is stale: run `make docs`"


def test_the_reference_lists_every_setting_once_per_process() -> None:
    rows = config_reference.all_settings()
    assert len(rows) > 80  # the scan still finds the settings classes
    assert {row.env for row in rows} >= {"STEWARD_INTERNAL_SECRET", "STEWARD_TOKEN_PEPPER", "STEWARD_DEV_TOKEN"}


def test_every_steward_name_in_the_code_is_in_the_reference() -> None:
    names = _names_in_code()
    assert "STEWARD_DATA_DIR" in names  # the walk still finds the code
    documented = set(re.findall(r"`(STEWARD_[A-Z0-9_]+)`", config_reference.OUTPUT.read_text()))
    assert names - documented == set(), "add them to a settings class, or to NOT_SETTINGS with the reason"


def test_names_that_are_not_settings_are_not_settings() -> None:
    settings = {row.env for row in config_reference.all_settings()}
    assert settings & config_reference.NOT_SETTINGS.keys() == set()


def test_every_setting_is_described() -> None:
    undescribed = [row.env for row in config_reference.all_settings() if not row.description]
    assert undescribed == [], "describe them in the code (a comment above the field)"
