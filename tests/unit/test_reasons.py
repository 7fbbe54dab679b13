"""Reasons are defined once, in the proto's ErrorReason enum: the service
takes every reason it sends from it, every value is sent, and the proto's
RPC comments, README.md and docs/ name only its values and document all of
them."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb

from service import errors
from service.reasons import ErrorReason, reason_name
from tests.support import reason_in

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "protos" / "tokenservice" / "v1" / "token_service.proto"
SERVICE_SOURCES = sorted((REPO / "service").rglob("*.py"))
# Where the enum is defined or turned into strings, not where reasons are sent.
REASON_PLUMBING = {REPO / "service" / "errors.py", REPO / "service" / "reasons.py"}

UNSPECIFIED = "ERROR_REASON_UNSPECIFIED"
_VALUES = pb.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
# Values 1-99 are ErrorInfo reasons, values from 100 VerifyTokenResponse reasons (see the proto).
ERROR_INFO_REASONS = {value.name for value in _VALUES if 0 < value.number < 100}
VERIFY_REASONS = {value.name for value in _VALUES if value.number >= 100}
REASONS = ERROR_INFO_REASONS | VERIFY_REASONS

# The strings callers branch on today: they stay exactly as they are.
WIRE_STRINGS_OF_V1 = {
    "IDENTITY_MISSING",
    "EMAIL_INVALID",
    "EXTERNAL_ID_INVALID",
    "BATCH_TOO_LARGE",
    "TOKEN_MISSING",
    "TOKEN_TOO_LARGE",
    "REQUEST_MALFORMED",
    "ORG_UNKNOWN",
    "SECRET_UNAVAILABLE",
    "SHUTTING_DOWN",
    "CREDENTIALS_MISSING",
    "CREDENTIALS_INVALID",
    "RPC_NOT_ALLOWED",
    "ORG_NOT_ALLOWED",
    "IDENTITY_NOT_ALLOWED",
    "RATE_LIMITED",
    "PEER_RATE_LIMITED",
    "API_KEYS_STALE",
    "AUDIT_UNAVAILABLE",
    "TOKEN_MALFORMED",
    "TOKEN_HEADER_INVALID",
    "TOKEN_ALGORITHM_INVALID",
    "TOKEN_SIGNATURE_INVALID",
    "TOKEN_IAT_MISSING",
    "TOKEN_ISSUED_IN_FUTURE",
    "TOKEN_EXPIRED",
    "TOKEN_IDENTITY_MISSING",
}
ABSTRACT_ERRORS: set[type[errors.TokenServiceError]] = {
    errors.TokenServiceError,
    errors.InvalidRequestError,
    errors.PermissionDeniedError,
}
ABSTRACT_ERRORS_BY_NAME = sorted(ABSTRACT_ERRORS, key=lambda cls: cls.__name__)

STATUS_CODE_NAMES = "|".join(code.name for code in grpc.StatusCode)
# "UNAVAILABLE `SECRET_UNAVAILABLE`": how the proto and the docs name a reason in prose.
CODE_THEN_REASON = re.compile(rf"\b(?:{STATUS_CODE_NAMES})`? `([A-Z][A-Z0-9_]*[A-Z0-9])`")
BACKTICKED_NAME = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def error_classes() -> list[type[errors.TokenServiceError]]:
    found, todo = [], [errors.TokenServiceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def concrete_error_classes() -> list[type[errors.TokenServiceError]]:
    return [cls for cls in error_classes() if cls not in ABSTRACT_ERRORS]


def instance(cls: type[errors.TokenServiceError]) -> errors.TokenServiceError:
    if issubclass(cls, errors.RateLimitedError):  # the errors that say when to retry
        return cls("what was wrong and how to fix it", retry_after=1.0)
    return cls("what was wrong and how to fix it")


def called_names(path: Path) -> Iterator[str]:
    """The names called in a module: `X(...)` and `module.X(...)`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                yield node.func.id
            elif isinstance(node.func, ast.Attribute):
                yield node.func.attr


def sending_sources() -> list[Path]:
    return [path for path in SERVICE_SOURCES if path not in REASON_PLUMBING]


def doc_files() -> list[Path]:
    """README.md and docs/ (where README content may move)."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def reason_column_names(markdown: str) -> Iterator[str]:
    """Backticked names in the `reason` column(s) of every markdown table."""
    columns: list[int] | None = None  # None: the next table line is a header
    for line in markdown.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = line.strip().strip("|").split("|")
        if columns is None:
            columns = [i for i, cell in enumerate(cells) if "reason" in cell.lower()]
            continue
        for i in columns:
            if i < len(cells):
                yield from BACKTICKED_NAME.findall(cells[i])


def enum_values_used(path: Path) -> Iterator[str]:
    """The X of every `ErrorReason.X` (also `module.ErrorReason.X`) in a module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "ErrorReason") or (
                isinstance(owner, ast.Attribute) and owner.attr == "ErrorReason"
            ):
                yield node.attr


def proto_text_outside_the_enum() -> str:
    text = PROTO.read_text()
    start = text.index("enum ErrorReason {")
    return text[:start] + text[text.index("}", start) :]


def test_the_wire_strings_of_v1_are_all_enum_values():
    missing = WIRE_STRINGS_OF_V1 - REASONS
    assert missing == set()
    assert UNSPECIFIED not in REASONS and pb.ErrorReason.Value(UNSPECIFIED) == 0


def test_reason_name_is_the_enum_name_and_refuses_unspecified():
    assert reason_name(ErrorReason.TOKEN_EXPIRED) == "TOKEN_EXPIRED"
    assert reason_name(ErrorReason.PEER_RATE_LIMITED) == "PEER_RATE_LIMITED"
    with pytest.raises(ValueError, match="never sent"):
        reason_name(ErrorReason.ERROR_REASON_UNSPECIFIED)


@pytest.mark.parametrize("cls", concrete_error_classes(), ids=lambda cls: cls.__name__)
def test_every_concrete_error_sends_an_error_info_reason_of_the_enum(cls):
    error = instance(cls)
    assert error.reason in ERROR_INFO_REASONS
    assert reason_in(errors.to_rpc_status(error)) == error.reason  # the first detail, in domain tokenservice.v1
    assert errors.status_code_for(error) not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def test_one_error_class_per_reason():
    reasons = [cls.reason for cls in concrete_error_classes()]
    assert sorted(reasons) == sorted(set(reasons))


@pytest.mark.parametrize("cls", ABSTRACT_ERRORS_BY_NAME, ids=lambda cls: cls.__name__)
def test_abstract_errors_carry_no_reason_and_cannot_be_raised(cls):
    assert not hasattr(cls, "reason")
    with pytest.raises(TypeError, match="subclass"):
        cls("message")


def test_every_error_class_the_service_raises_has_a_reason():
    by_name = {cls.__name__: cls for cls in error_classes()}
    raised = {name for path in SERVICE_SOURCES for name in called_names(path) if name in by_name}
    assert {name for name in raised if not hasattr(by_name[name], "reason")} == set()


def test_every_error_info_reason_is_sent():
    raised = {name for path in sending_sources() for name in called_names(path)}
    sent = {cls.reason for cls in concrete_error_classes() if cls.__name__ in raised}
    assert not ERROR_INFO_REASONS - sent, f"never raised: {sorted(ERROR_INFO_REASONS - sent)}"


def test_every_verify_token_reason_is_taken_from_the_enum():
    used = {name for path in sending_sources() for name in enum_values_used(path)}
    assert not VERIFY_REASONS - used, f"not taken from ErrorReason in service/: {sorted(VERIFY_REASONS - used)}"


def test_no_reason_is_spelt_out_as_a_string_in_the_service():
    spelt = {
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value}"
        for path in SERVICE_SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in REASONS
    }
    assert not spelt, "spelt as strings; take them from ErrorReason:\n" + "\n".join(sorted(spelt))


def test_the_enum_comment_of_each_error_names_its_status_code():
    documented = dict(re.findall(r"// ([A-Z_]+) \(([A-Z_]+)\):", PROTO.read_text()))
    wrong = {
        cls.reason: documented.get(cls.reason)
        for cls in concrete_error_classes()
        if documented.get(cls.reason) != errors.status_code_for(instance(cls)).name
    }
    assert not wrong, f"the proto's comment names another status code (or none): {wrong}"


def test_the_rpc_comments_name_only_enum_reasons_and_list_every_error_info_reason():
    named = set(CODE_THEN_REASON.findall(proto_text_outside_the_enum()))
    assert named - REASONS == set()
    assert ERROR_INFO_REASONS - named == set()


def test_reason_names_are_found_in_tables_and_prose():
    markdown = (
        "| code | reason | what to do |\n|---|---|---|\n"
        "| NOT_FOUND | `ORG_UNKNOWN`, `ORG_GONE` | use `DEFAULT_ORG` |\n\n"
        "| setting | env |\n|---|---|\n| `grpc_addr` | `TOKENSERVICE_GRPC_ADDR` |\n\n"
        "mints fail UNAVAILABLE `SECRET_GONE` meanwhile\n"
    )
    assert list(reason_column_names(markdown)) == ["ORG_UNKNOWN", "ORG_GONE"]
    assert CODE_THEN_REASON.findall(markdown) == ["SECRET_GONE"]


def test_docs_name_only_enum_reasons():
    files = [*doc_files(), *sorted(REPO.glob("clients/*/README.md")), REPO / "clients" / "README.md"]
    named = {
        (str(path.relative_to(REPO)), name)
        for path in files
        for name in {*reason_column_names(path.read_text()), *CODE_THEN_REASON.findall(path.read_text())}
    }
    unknown = sorted((path, name) for path, name in named if name not in REASONS)
    assert not unknown, f"documented as reasons but not ErrorReason values: {unknown}"


def test_every_reason_is_documented_in_readme_or_docs():
    documented = {name for path in doc_files() for name in BACKTICKED_NAME.findall(path.read_text())}
    assert not REASONS - documented, f"not in README.md or docs/: {sorted(REASONS - documented)}"
