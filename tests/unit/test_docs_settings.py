"""docs/configuration.md has a row for every setting `tokenservice serve` accepts, and none for another.

The accepted settings come from service/config.py, not from a list here: each field of `Config`
is a top-level setting, or, when its type is a dataclass, a section whose fields are its keys
(`vault.addr`); a field that maps names to a dataclass (`Config.orgs`, `AuthConfig.callers`) is
the file's `[<field>.<name>]` tables, whose keys are that dataclass's fields but `name`. Added
to those: the settings the environment variables feed (`ENVIRONMENT_SETTINGS`: `secret_path`
and `secret_field` are not fields) and the keys the [tracing] parser takes (`TRACING_SETTINGS`).

In the document, a row of a table under "Settings reference" documents the settings its first
cell names in backticks: `a.b`; `[orgs.<name>]` `path` (a table, then its key); under a heading
`[callers.<name>]`, a bare `orgs`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path

from service import config
from service.tracing import TRACING_SETTINGS

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO / "docs" / "configuration.md"
REFERENCE_HEADING = "## Settings reference"
NAMED_ENTRY = "<name>"

_CODE = re.compile(r"`([^`]+)`")
_TABLE = re.compile(r"^\[(.+)\]$")
_SEPARATOR_ROW = re.compile(r"^\|[\s|:-]+\|$")


def accepted_settings() -> set[str]:
    """Every setting service/config.py accepts, as docs/configuration.md writes them."""
    names = set(config.ENVIRONMENT_SETTINGS.values()) | {f"tracing.{key}" for key in TRACING_SETTINGS}
    hints = typing.get_type_hints(config.Config)
    for field in dataclasses.fields(config.Config):
        section = _dataclass_of(hints[field.name])
        if section is None:
            names |= _keys(field.name, hints[field.name])
            continue
        section_hints = typing.get_type_hints(section)
        for key in dataclasses.fields(section):
            names |= _keys(f"{field.name}.{key.name}", section_hints[key.name])
    return names


def _keys(name: str, hint: object) -> set[str]:
    """`name` itself, or for a mapping of names to a dataclass, the keys of its [<table>.<name>] tables."""
    if typing.get_origin(hint) is Mapping:
        entry = _dataclass_of(typing.get_args(hint)[1])
        if entry is not None:
            # Named entries are top-level tables of the file: AuthConfig.callers is [callers.<name>].
            table = name.rsplit(".", 1)[-1]
            return {f"{table}.{NAMED_ENTRY}.{key.name}" for key in dataclasses.fields(entry) if key.name != "name"}
    return {name}


def _dataclass_of(hint: object) -> type | None:
    """The dataclass a field holds (also when it may be None), else None."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for candidate in (hint, *(typing.get_args(hint) if optional else ())):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def reference_rows(text: str) -> dict[str, str]:
    """Each setting documented in the "Settings reference" tables of `text`, with its row."""
    rows: dict[str, str] = {}
    heading_table = None
    in_reference = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_reference = line.strip() == REFERENCE_HEADING
        elif line.startswith("### "):
            found = _CODE.search(line)
            table = _TABLE.match(found.group(1)) if found else None
            heading_table = table.group(1) if table else None
        elif in_reference and line.startswith("|") and not _SEPARATOR_ROW.match(line.strip()):
            for name in _names_in_cell(line.split("|")[1], heading_table):
                rows[name] = line
    return rows


def _names_in_cell(cell: str, heading_table: str | None) -> list[str]:
    names: list[str] = []
    table = heading_table
    tokens = _CODE.findall(cell)
    for index, token in enumerate(tokens):
        named_table = _TABLE.match(token)
        if named_table and index < len(tokens) - 1:
            table = named_table.group(1)  # `[orgs.<name>]` `path`: the table of the keys that follow
        elif named_table:
            names.append(named_table.group(1))  # `[tracing.resource_attributes]`: a table that is a setting
        elif table and not token.startswith(f"{table}."):
            names.append(f"{table}.{token}")
        else:
            names.append(token)
    return names


def test_every_accepted_setting_has_a_row_in_the_configuration_reference() -> None:
    documented = reference_rows(CONFIGURATION.read_text(encoding="utf-8"))
    missing = sorted(accepted_settings() - set(documented))
    assert not missing, f"settings service/config.py accepts but docs/configuration.md does not document: {missing}"


def test_the_configuration_reference_documents_no_setting_that_is_refused() -> None:
    documented = reference_rows(CONFIGURATION.read_text(encoding="utf-8"))
    unknown = sorted(set(documented) - accepted_settings())
    assert not unknown, f"docs/configuration.md documents settings service/config.py refuses: {unknown}"


def test_each_environment_variable_is_on_the_row_of_the_setting_it_feeds() -> None:
    documented = reference_rows(CONFIGURATION.read_text(encoding="utf-8"))
    wrong = sorted(
        f"{variable} ({setting})"
        for variable, setting in config.ENVIRONMENT_SETTINGS.items()
        if variable not in documented.get(setting, "")
    )
    assert not wrong, f"environment variables missing from their setting's row: {wrong}"


def test_the_derived_settings_cover_sections_named_tables_and_environment_only_settings() -> None:
    accepted = accepted_settings()
    assert {"grpc_addr", "vault.addr", "transit.max_batch_size", "limits.max_connections"} <= accepted
    assert {"orgs.<name>.signing", "callers.<name>.spiffe_id", "tracing.resource_attributes"} <= accepted
    assert {"secret_path", "secret_field"} <= accepted
    assert not {"orgs", "vault", "auth.callers", "orgs.<name>.name", "callers.<name>.name"} & accepted


def test_rows_are_read_in_each_notation_and_only_under_the_settings_reference() -> None:
    text = (
        "## Settings reference\n\n"
        "| setting | meaning |\n|---|---|\n"
        "| `grpc_addr` | listen |\n"
        "| `vault.token` / `vault.token_file` | token auth, `not_a_setting` |\n"
        "| `[orgs.<name>]` `path` | KV path |\n"
        "| `[tracing.resource_attributes]` | more |\n\n"
        "### `[callers.<name>]`\n\n"
        "| key | meaning |\n|---|---|\n"
        "| `rate_per_second`, `burst` | bucket |\n\n"
        "## Other commands\n\n"
        "| command | reads |\n|---|---|\n"
        "| `workers` | not a reference row |\n"
    )
    assert set(reference_rows(text)) == {
        "grpc_addr",
        "vault.token",
        "vault.token_file",
        "orgs.<name>.path",
        "tracing.resource_attributes",
        "callers.<name>.rate_per_second",
        "callers.<name>.burst",
    }
