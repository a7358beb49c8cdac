"""The documentation stays true to the code: docs/configuration.md is what the settings classes generate, and it
names every `STEWARD_*` variable the hand-written code uses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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


# Documents that live outside the repository (the design notes and studies the project started from); the
# project's own words for them are docs/architecture.md and docs/field-notes.md.
OUTSIDE = re.compile(r"\.\./shared|\bshared/(?:design|research|seeds)\b|\bARCHITECTURE\b|\bFIELD-NOTES\b|STYLE\.md")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".json", ".ini", ".proto", ".txt", ".cfg", ".mako", ""}
MARKDOWN_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)]*)?\)")


def _tracked_text_files() -> list[Path]:
    git = shutil.which("git")
    assert git is not None
    listed = subprocess.run(
        [git, "ls-files", "-z"], cwd=config_reference.REPO, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    paths = [config_reference.REPO / name for name in listed if name]
    return [p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES and "_pb2" not in p.name]


def test_nothing_refers_to_a_document_outside_the_repository() -> None:
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)  # the walk still finds the files
    found = {
        f"{p.relative_to(config_reference.REPO)}:{number}"
        for p in files
        for number, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    }
    assert found == set()


def test_every_relative_link_in_the_markdown_resolves() -> None:
    documents = [p for p in _tracked_text_files() if p.suffix == ".md"]
    assert len(documents) > 20
    broken = {
        f"{p.relative_to(config_reference.REPO)} -> {target}"
        for p in documents
        for target in MARKDOWN_LINK.findall(p.read_text())
        if not (p.parent / target).exists()
    }
    assert broken == set()
