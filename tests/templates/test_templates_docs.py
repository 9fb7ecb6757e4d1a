"""The example in docs/templates.md is a working folder, and its shown output is real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handlers.schedule import parse_dates, parse_weekly
from service.cli import main
from service.templates import (
    SAMPLE_TIME,
    check,
    parse_timezone,
    sample_messages,
    template_context,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
#: Fenced blocks whose info string names a file, e.g. ```toml rules.toml; a file of a
#: further example is named with the example's prefix, e.g. ```toml hours:rules.toml
FILE_BLOCK = re.compile(r"^```\w+ (?:(\w+):)?(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def write_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, expected: set[str]
) -> Path:
    """The documented folder of one example, written out as templates/ under a fresh
    working directory."""
    monkeypatch.delenv("AUTOREPLY_TEMPLATES_DIR", raising=False)
    monkeypatch.delenv("AUTOREPLY_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    blocks = [
        (name, text)
        for example, name, text in FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))
        if example == prefix
    ]
    assert {name for name, _ in blocks} >= expected
    for name, text in blocks:
        path = tmp_path / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Path("templates")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first example: billing, a key account and a shared signature."""
    return write_example(tmp_path, monkeypatch, "", {"rules.toml", "billing/body.txt"})


@pytest.fixture
def hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worked example of office hours, a vacation and a skip rule."""
    expected = {"rules.toml", "closed/body.txt", "holiday/body.txt"}
    return write_example(tmp_path, monkeypatch, "hours", expected)


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
        " answers the thread first\nmode: send (chosen by AUTOREPLY_MODE)\n--- body.txt ---\n"
        "Hello Jane,\n"
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


def test_documented_office_hours_example_passes_check(hours: Path) -> None:
    assert check(hours, timezone="UTC") == []


@pytest.mark.parametrize("at", ["2026-12-04T18:30", "2026-12-28T10:00"])
def test_documented_office_hours_previews(
    hours: Path, at: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented previews are what the command prints (as far as the docs show)."""
    argv = ["templates", "preview", "--dir", "templates/", "--timezone", "Europe/Berlin"]
    assert main([*argv, "--at", at]) == 0
    out = capsys.readouterr().out
    command = f"$ autoreply templates preview --dir templates/ --timezone Europe/Berlin --at {at}\n"
    doc = DOC.read_text(encoding="utf-8")
    shown = doc[doc.index(command) + len(command) :].split("```", 1)[0]
    assert out.startswith(shown)


def test_documented_skip_rule_preview(hours: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["templates", "preview", "--dir", "templates/", "--from", "t@tickets.partner.example"]
    assert main(argv) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == "action: skip, no reply is sent (reason rule:partner tickets)"
    assert f"`{line}`" in " ".join(DOC.read_text(encoding="utf-8").split())


@pytest.mark.parametrize(
    ("sender", "head"),
    [
        (
            "Ann <ann@bigcustomer.com>",
            "template: priority (templates/priority)\nchosen by: rule 'key account'\n"
            "delay: 0 (rule 'key account'): answered at once\n"
            "mode: draft (chosen by rule 'key account')\n",
        ),
        (
            "Jane <jane@example.com>",
            "chosen by: default (no rule matched)\n"
            "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
            "mode: send (chosen by AUTOREPLY_MODE)\n",
        ),
    ],
)
def test_documented_modes(
    example: Path, capsys: pytest.CaptureFixture[str], sender: str, head: str
) -> None:
    """The reply-modes example: the key account's reply is a draft, the rest are sent."""
    assert main(["templates", "preview", "--dir", "templates/", "--from", sender]) == 0
    out = capsys.readouterr().out
    assert head in out.split("--- body.txt ---")[0]
    for line in head.splitlines():
        assert line in DOC.read_text(encoding="utf-8")


def test_documented_time_entries_parse_as_described() -> None:
    """Every `weekly = "..."` / `dates = "..."` the docs show is accepted, and the
    documented empty window is refused."""
    doc = DOC.read_text(encoding="utf-8")
    entries = re.findall(r'`(weekly|dates) = "([^"]+)"`', doc)
    assert len(entries) >= 8
    for key, text in entries:
        (parse_weekly if key == "weekly" else parse_dates)(text)
    for text in ("Mon,Wed,Fri", "Fri-Mon", "daily"):
        assert f'`"{text}"`' in doc
        parse_weekly(text)
    assert '(`"Mon 09:00-09:00"`)' in doc
    with pytest.raises(ValueError, match="empty window"):
        parse_weekly("Mon 09:00-09:00")
