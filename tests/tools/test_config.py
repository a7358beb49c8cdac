"""The tools YAML config: what a valid file becomes, and how each kind of mistake is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.tools.config import (
    HttpServerConfig,
    StdioServerConfig,
    ToolsConfigError,
    Trust,
    load_config,
    parse_config,
)

VALID = """
refresh_interval: 120
servers:
  notes:
    transport: stdio
    command: python
    args: ["-m", "examples.notes_mcp", "--data", "data/notes.db"]
    env:
      NOTES_MCP_WRITE_DELAY: "0"
      TOKEN: "Bearer ${NOTES_TOKEN}"
    cwd: /srv/steward
    trust: trusted
    tools: [list_notes, "read_*"]
    refresh_interval: 30
  search:
    transport: http
    url: https://mcp.example.com/mcp
    headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
"""


def test_a_valid_file_becomes_typed_settings(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(VALID)
    config = load_config(path, environ={"NOTES_TOKEN": "n-123", "SEARCH_TOKEN": "s-456"})

    notes = config.servers["notes"]
    assert isinstance(notes, StdioServerConfig)
    assert notes.command == "python"
    assert notes.args == ("-m", "examples.notes_mcp", "--data", "data/notes.db")
    assert notes.env == {"NOTES_MCP_WRITE_DELAY": "0", "TOKEN": "Bearer n-123"}
    assert notes.cwd == Path("/srv/steward")
    assert notes.trust is Trust.TRUSTED
    assert notes.tools == ("list_notes", "read_*")
    assert config.refresh_interval_for("notes") == 30

    search = config.servers["search"]
    assert isinstance(search, HttpServerConfig)
    assert search.url == "https://mcp.example.com/mcp"
    assert search.headers == {"Authorization": "Bearer s-456"}
    assert search.trust is Trust.UNTRUSTED  # the safe default
    assert search.tools is None
    assert config.refresh_interval_for("search") == 120


def test_an_empty_file_configures_no_servers() -> None:
    assert parse_config("").servers == {}


def _server(body: str, name: str = "notes") -> str:
    indented = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return f"servers:\n  {name}:\n{indented}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(_server("transport: stdio"), ["servers.notes.command: Field required"], id="missing-command"),
        pytest.param(
            _server("transport: stdio\ncomand: python"),
            ["servers.notes.comand: Extra inputs are not permitted", "servers.notes.command: Field required"],
            id="typo-in-key",
        ),
        pytest.param(
            _server("transport: ftp\ncommand: x"), ["servers.notes: ", "'ftp'", "'stdio', 'http'"], id="bad-transport"
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x\ntrust: maybe"),
            ["servers.notes.trust: Input should be 'trusted' or 'untrusted'"],
            id="bad-trust",
        ),
        pytest.param(
            _server("transport: http\nurl: ftp://host/mcp"),
            ["servers.notes.url: String should match pattern"],
            id="bad-url",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x\nenv: {PORT: 8080}"),
            ["servers.notes.env.PORT: Input should be a valid string"],
            id="env-value-not-a-string",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x\nrefresh_interval: 0"),
            ["servers.notes.refresh_interval: Input should be greater than 0"],
            id="zero-refresh-interval",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x", name="Notes.v2"),
            ["server name 'Notes.v2' must match"],
            id="bad-server-name",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x", name="time"),
            ["server name 'time' is reserved"],
            id="reserved-server-name",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x\nenv: {TOKEN: '${UNSET_FOR_TEST}'}"),
            ["servers.notes.env.TOKEN: environment variable UNSET_FOR_TEST is not set"],
            id="unset-env-reference",
        ),
        pytest.param(
            _server("transport: stdio\ncommand: x\nidempotency_keys: true"),
            ["servers.notes: idempotency_keys: true needs trust: trusted"],
            id="keys-on-an-untrusted-server",
        ),
        pytest.param("- notes\n- search\n", ["the top level must be a mapping, got list"], id="not-a-mapping"),
        pytest.param("servers: [notes]\n", ["servers: Input should be a valid dictionary"], id="servers-not-a-map"),
        pytest.param(
            "servers:\n  notes: {transport: stdio\n",
            ["not valid YAML at line 3, column 1", "flow mapping at line 2"],
            id="yaml-syntax",
        ),
    ],
)
def test_mistakes_are_reported_with_the_file_and_the_field(text: str, expected: list[str]) -> None:
    with pytest.raises(ToolsConfigError) as caught:
        parse_config(text, source="deploy/tools.yaml", environ={})
    message = str(caught.value)
    assert message.startswith("deploy/tools.yaml: ")
    for fragment in expected:
        assert fragment in message, message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ToolsConfigError, match=r"absent\.yaml: cannot read tools config: No such file"):
        load_config(path)
