"""The example in docs/templates.md is a working folder, and its shown output is real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.cli import main
from service.templates import (
    SAMPLE_TIME,
    check,
    parse_timezone,
    sample_messages,
    template_context,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
#: Fenced blocks whose info string names a file, e.g. ```toml rules.toml
FILE_BLOCK = re.compile(r"^```\w+ (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The documented folder, written out as templates/ under a fresh working directory."""
    monkeypatch.delenv("AUTOREPLY_TEMPLATES_DIR", raising=False)
    monkeypatch.delenv("AUTOREPLY_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    blocks = FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert {name for name, _ in blocks} >= {"rules.toml", "billing/body.txt"}
    for name, text in blocks:
        path = tmp_path / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Path("templates")


def test_documented_example_passes_check(example: Path) -> None:
    """Copying the example from the docs gives a folder with no problems."""
    assert check(example) == []


def test_documented_check_output(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check success line in the docs is what the command prints."""
    assert main(["templates", "check", "--dir", "templates/"]) == 0
    assert capsys.readouterr().out in DOC.read_text(encoding="utf-8")


def test_documented_check_error(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented error appears when vars.hours is misspelt in billing/body.txt."""
    body = example / "billing" / "body.txt"
    body.write_text(body.read_text().replace("vars.hours", "vars.hour"))
    assert main(["templates", "check", "--dir", "templates/"]) == 1
    for line in capsys.readouterr().out.splitlines():
        assert line in DOC.read_text(encoding="utf-8")


def test_documented_preview(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented preview picks the billing rule and greets Jane."""
    argv = ["templates", "preview", "--dir", "templates/", "--from", "Jane <jane@example.com>"]
    argv += ["--to", "support@example.agentmail.to", "--subject", "Invoice 42 is wrong"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "template: billing (templates/billing)\nchosen by: rule 'billing'\n"
        "delay: 15m (rule 'billing'): decided 15m after it arrives; not answered if someone"
        " answers the thread first\n--- body.txt ---\nHello Jane,\n"
    )
    assert out.splitlines()[2] in DOC.read_text(encoding="utf-8")
    assert "<p>Thank you for writing about &ldquo;Invoice 42 is wrong&rdquo;." in out


def test_documented_grace_period_preview(
    example: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grace period section's preview: the key account is answered at once, whatever
    the global delay."""
    monkeypatch.setenv("AUTOREPLY_REPLY_DELAY", "10m")
    argv = ["templates", "preview", "--dir", "templates/", "--from", "Ann <ann@bigcustomer.com>"]
    assert main(argv) == 0
    head = capsys.readouterr().out.splitlines()[:3]
    for line in head:
        assert line in DOC.read_text(encoding="utf-8")


def test_documented_variables_are_the_context() -> None:
    """Every top-level template variable is described in the docs' table."""
    _, message = sample_messages()[0]
    context = template_context(
        message, variables={}, received_at=SAMPLE_TIME, timezone=parse_timezone("UTC")
    )
    documented = set(re.findall(r"^\| `(\w+)[.`]", DOC.read_text(encoding="utf-8"), re.M))
    assert documented >= set(context)
