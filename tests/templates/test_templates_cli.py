"""``autoreply templates check|preview``, driven through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from service.templates import TemplateSet, sample_messages

RULES = """\
[vars]
team = "Support"

[[rule]]
name = "invoices"
subject = "invoice"
template = "billing"
[rule.vars]
team = "Accounts"
"""


@pytest.fixture(autouse=True)
def _no_template_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which folder it uses; the caller's environment does not leak in."""
    monkeypatch.delenv("AUTOREPLY_TEMPLATES_DIR", raising=False)
    monkeypatch.delenv("AUTOREPLY_TIMEZONE", raising=False)
    monkeypatch.delenv("AUTOREPLY_REPLY_DELAY", raising=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with a billing template (text and HTML), a custom default and rules."""
    root = tmp_path / "templates"
    (root / "billing").mkdir(parents=True)
    (root / "default").mkdir()
    (root / "billing" / "body.txt").write_text("Billing for {{ subject }} - {{ vars.team }}\n")
    (root / "billing" / "body.html").write_text("<p>{{ subject }}</p>")
    (root / "default" / "body.txt").write_text("Hi {{ sender.name }} - {{ vars.team }}\n")
    (root / "rules.toml").write_text(RULES)
    return root


def test_check_ok(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A good folder exits 0 with a one-line summary."""
    assert main(["templates", "check", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"ok: 2 template(s) (billing, default), 1 rule(s), default 'default' [{folder}]\n"
    )


def test_check_reads_the_folder_from_the_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --dir, AUTOREPLY_TEMPLATES_DIR is checked, as the service would load it."""
    monkeypatch.setenv("AUTOREPLY_TEMPLATES_DIR", str(folder))
    assert main(["templates", "check"]) == 0
    assert "2 template(s)" in capsys.readouterr().out


def test_check_reads_the_settings_file_as_the_service_does(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The folder named in ``.env`` is the one checked: the settings are read in one place."""
    (tmp_path / ".env").write_text(f"AUTOREPLY_TEMPLATES_DIR={folder}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["templates", "check"]) == 0
    assert f"[{folder}]" in capsys.readouterr().out


def test_a_bad_folder_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOREPLY_TEMPLATES_DIR", "/nonexistent/templates")
    assert main(["templates", "check"]) == 1
    assert capsys.readouterr().err == (
        "error: configuration error: AUTOREPLY_TEMPLATES_DIR: "
        "/nonexistent/templates is not a directory\n"
    )


def test_check_without_a_folder_checks_the_shipped_templates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With nothing configured, the shipped default is checked."""
    assert main(["templates", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 template(s) (default)")


def test_check_reports_file_and_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each problem is one file:line: message line, and the exit status is 1."""
    (folder / "billing" / "body.txt").write_text("Billing\n{{ vars.teem }}\n")
    (folder / "default" / "body.txt").write_text("{% if %}\n")
    assert main(["templates", "check", "--dir", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{folder}/default/body.txt:1: Expected an expression, got 'end of statement block'",
        "1 problem(s) found",
    ]
    (folder / "default" / "body.txt").write_text("fine\n")
    assert main(["templates", "check", "--dir", str(folder)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{folder}/billing/body.txt:2: 'dict object' has no attribute 'teem' "
        "(rule 'invoices', named sender)"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["templates", "check", "--dir", "/nonexistent/x"], None),
        (["templates", "check", "--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["templates", "preview", "--template", "vip"], "no template 'vip'"),
        (["templates", "preview", "--message", "/nonexistent.json"], "No such file"),
        (["templates", "preview", "--timezone", "Nowhere"], "unknown time zone"),
        (["templates", "check", "--timezone", "Europe"], "unknown time zone 'Europe'"),
        (["templates", "preview", "--at", "9999-12-31T23:00"], "use a year from 1970 to 2999"),
        (["templates", "preview", "--at", "0001-01-01T00:00+05:00"], "use a year from 1970"),
        (["templates", "preview", "--timezone", "America"], "unknown time zone 'America'"),
    ],
)
def test_failures_are_one_line(
    argv: list[str], error: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input exits 1 with one line naming the problem, never a traceback."""
    assert main(argv) == 1
    captured = capsys.readouterr()
    output = (captured.out + captured.err).strip().splitlines()
    assert "Traceback" not in captured.err
    if error is None:
        assert output[0] == "/nonexistent/x: not a directory"
    else:
        assert len(output) == 1
        assert error in output[0]


def test_preview_default_shows_what_would_be_sent(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a matching rule the default template answers, rendered exactly."""
    argv = ["templates", "preview", "--dir", str(folder), "--from", "Zoë <zoe@example.com>"]
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        f"template: default ({folder}/default)\n"
        "chosen by: default (no rule matched)\n"
        "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
        "mode: send (chosen by AUTOREPLY_MODE)\n"
        "--- body.txt ---\n"
        "Hi Zoë - Support\n"
        "--- body.html: none, the reply is plain text only ---\n"
    )


def test_preview_names_the_rule_and_prints_html(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rules choose as in the service; the HTML is escaped and printed verbatim."""
    argv = ["templates", "preview", "--dir", str(folder), "--subject", "Invoice <42>"]
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        f"template: billing ({folder}/billing)\n"
        "chosen by: rule 'invoices'\n"
        "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
        "mode: send (chosen by AUTOREPLY_MODE)\n"
        "--- body.txt ---\n"
        "Billing for Invoice <42> - Accounts\n"
        "--- body.html ---\n"
        "<p>Invoice &lt;42&gt;</p>\n"
        "--- (no newline at end of the body) ---\n"
    )


def test_preview_forced_template(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--template skips the rules but keeps the vars of the rule that uses the template."""
    argv = ["templates", "preview", "--dir", str(folder), "--template", "billing"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "chosen by: --template (with the vars of rule 'invoices')\n" in out
    assert "Billing for Hello - Accounts\n" in out


def test_preview_from_a_webhook_event_file(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--message takes a saved webhook event and renders what the service would send."""
    payload = {
        "event_type": "message.received",
        "message": {
            "inbox_id": "support@example.agentmail.to",
            "message_id": "<m@x>",
            "thread_id": "t",
            "from": "Jane Doe <jane@example.com>",
            "to": ["support@example.agentmail.to"],
            "subject": "Your invoice",
            "text": "hello",
            "timestamp": "2025-01-06T09:30:00Z",
        },
    }
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(payload))
    assert main(["templates", "preview", "--dir", str(folder), "--message", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "--- body.txt ---\nBilling for Your invoice - Accounts\n" in out


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ("{}", "message.inbox_id"),
    ],
)
def test_preview_bad_message_file(
    tmp_path: Path, content: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken sample file is named with what is wrong."""
    sample = tmp_path / "sample.json"
    sample.write_text(content)
    assert main(["templates", "preview", "--message", str(sample)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sample}: ")
    assert error in err


def test_preview_message_excludes_the_field_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--message and --from together are ambiguous and refused."""
    argv = ["templates", "preview", "--message", str(tmp_path / "x.json"), "--from", "a@b.c"]
    assert main(argv) == 1
    assert "cannot be combined" in capsys.readouterr().err


def test_preview_text_is_what_the_service_renders(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Preview and the service share one renderer, so what you see is what is sent."""
    _, sample = sample_messages()[0]
    expected = TemplateSet.load(folder).render(sample).text
    argv = ["templates", "preview", "--dir", str(folder), "--from", sample.sender]
    argv += ["--subject", sample.subject or "", "--text", sample.text or ""]
    assert main(argv) == 0
    assert f"--- body.txt ---\n{expected}--- body.html" in capsys.readouterr().out


def test_preview_shows_the_global_delay_and_the_rules(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delay the service would give the message, and what set it."""
    monkeypatch.setenv("AUTOREPLY_REPLY_DELAY", "90s")
    (folder / "rules.toml").write_text(RULES.replace("[rule.vars]", 'delay = "2h"\n[rule.vars]'))
    assert main(["templates", "preview", "--dir", str(folder)]) == 0
    assert "delay: 90s (AUTOREPLY_REPLY_DELAY): decided 90s after it arrives" in (
        capsys.readouterr().out
    )
    assert main(["templates", "preview", "--dir", str(folder), "--subject", "invoice"]) == 0
    assert "delay: 2h (rule 'invoices'): decided 2h after" in capsys.readouterr().out


def test_preview_with_a_bad_delay_setting_is_one_line(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad AUTOREPLY_REPLY_DELAY is named, as the service would name it."""
    monkeypatch.setenv("AUTOREPLY_REPLY_DELAY", "soon")
    assert main(["templates", "preview", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: configuration error: AUTOREPLY_REPLY_DELAY: ")


def test_check_reports_a_bad_rule_delay_with_its_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """templates check names the file and line of a delay it cannot read."""
    (folder / "rules.toml").write_text(
        RULES.replace("[rule.vars]", 'delay = "1 hour"\n[rule.vars]')
    )
    assert main(["templates", "check", "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{folder}/rules.toml:8: rule 'invoices': delay: invalid duration" in out


TIMED_RULES = """\
[[rule]]
name = "partners"
sender = "@partner.example"
action = "skip"

[[rule]]
name = "christmas"
dates = "2026-12-24 - 2026-12-26"
template = "holiday"

[[rule]]
name = "after hours"
weekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]
template = "closed"
"""


@pytest.fixture
def timed(tmp_path: Path) -> Path:
    """Office hours in Berlin, a Christmas break, and partners never answered."""
    root = tmp_path / "timed"
    for name, body in {
        "closed": 'Closed. Back {{ window.end.strftime("%A %H:%M") }}.\n',
        "holiday": 'Away until {{ (window.end).strftime("%d %B") }}, {{ sender.name }}.\n',
        "default": "Hello {{ sender.name }}.\n",
    }.items():
        (root / name).mkdir(parents=True)
        (root / name / "body.txt").write_text(body)
    (root / "rules.toml").write_text(TIMED_RULES)
    return root


def preview(timed: Path, *args: str) -> list[str]:
    return ["templates", "preview", "--dir", str(timed), "--timezone", "Europe/Berlin", *args]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (
            "2026-12-24T18:30",
            "received: Thursday 2026-12-24 18:30 CET (+01:00)\n"
            "window: Thursday 2026-12-24 00:00 CET (+01:00)"
            " to Sunday 2026-12-27 00:00 CET (+01:00)\n"
            "template: holiday ({root}/holiday)\n"
            "chosen by: rule 'christmas'\n"
            "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
            "mode: send (chosen by AUTOREPLY_MODE)\n"
            "--- body.txt ---\n"
            "Away until 27 December, Jane Doe.\n",
        ),
        (
            # An offset is honoured: 12:30 in New York is 18:30 in Berlin, a Friday.
            "2026-12-04T12:30-05:00",
            "received: Friday 2026-12-04 18:30 CET (+01:00)\n"
            "window: Friday 2026-12-04 18:00 CET (+01:00) to Monday 2026-12-07 09:00 CET (+01:00)\n"
            "template: closed ({root}/closed)\n"
            "chosen by: rule 'after hours'\n"
            "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
            "mode: send (chosen by AUTOREPLY_MODE)\n"
            "--- body.txt ---\n"
            "Closed. Back Monday 09:00.\n",
        ),
        (
            # The weekend the clocks go forward: closed in CET, open again in CEST.
            "2026-03-28T10:00Z",
            "received: Saturday 2026-03-28 11:00 CET (+01:00)\n"
            "window: Friday 2026-03-27 18:00 CET (+01:00)"
            " to Monday 2026-03-30 09:00 CEST (+02:00)\n"
            "template: closed ({root}/closed)\n"
            "chosen by: rule 'after hours'\n"
            "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
            "mode: send (chosen by AUTOREPLY_MODE)\n"
            "--- body.txt ---\n"
            "Closed. Back Monday 09:00.\n",
        ),
        (
            "2026-12-01T10:00",
            "received: Tuesday 2026-12-01 10:00 CET (+01:00)\n"
            "template: default ({root}/default)\n"
            "chosen by: default (no rule matched)\n"
            "delay: 0 (AUTOREPLY_REPLY_DELAY): answered at once\n"
            "mode: send (chosen by AUTOREPLY_MODE)\n"
            "--- body.txt ---\n"
            "Hello Jane Doe.\n",
        ),
    ],
)
def test_preview_at_a_moment_shows_the_rule_and_window(
    timed: Path, at: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at says when the message was received; the rule for that moment answers and
    its window's end is computed ("back Monday 09:00"), across a clock change too."""
    assert main(preview(timed, "--at", at)) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected.format(root=timed)), out


def test_preview_of_a_skip_rule_says_nothing_is_sent(
    timed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = preview(timed, "--at", "2026-12-24T18:30", "--from", "Bot <bot@partner.example>")
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        "received: Thursday 2026-12-24 18:30 CET (+01:00)\n"
        "chosen by: rule 'partners'\n"
        "action: skip, no reply is sent (reason rule:partners)\n"
    )


@pytest.mark.parametrize(
    ("at", "error"),
    [
        ("2026-03-29T02:30", "skip that time (they jump forward to 03:00)"),
        (
            "2026-10-25T02:30",
            "show that time twice (they go back); add the offset: +02:00 or +01:00",
        ),
        ("24.12.2026 18:30", "is not a date and time"),
    ],
)
def test_preview_refuses_a_moment_that_is_not_one(
    timed: Path, at: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wall-clock time the zone skips or repeats is refused with the way out."""
    assert main(preview(timed, "--at", at)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert error in err


def test_check_renders_window_templates_inside_their_window(
    timed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Templates reading window.end check clean under their time rules; the same
    template reachable without a window (here: the default) is an error with its line."""
    assert main(["templates", "check", "--dir", str(timed)]) == 0
    assert capsys.readouterr().out.startswith(
        "ok: 3 template(s) (closed, default, holiday), 3 rule(s)"
    )
    (timed / "rules.toml").write_text('default = "closed"\n' + TIMED_RULES)
    assert main(["templates", "check", "--dir", str(timed)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{timed}/closed/body.txt:1: 'None' has no attribute 'end' (no rule, named sender)"
    )


def test_check_reports_rules_errors_with_file_and_line(
    timed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (timed / "rules.toml").write_text(TIMED_RULES.replace("Fri 18:00 - Mon", "Fri 25:00 - Mon"))
    assert main(["templates", "check", "--dir", str(timed)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{timed}/rules.toml:13: rule 'after hours': weekly: 25:00 is not a time of day "
        "(00:00 to 23:59)",
        "1 problem(s) found",
    ]


def test_preview_of_a_window_without_an_end(
    timed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Windows covering the whole week have no end to announce: said so, not a crash."""
    (timed / "always").mkdir()
    (timed / "always" / "body.txt").write_text("{% if window.end %}back{% endif %}always\n")
    (timed / "rules.toml").write_text(
        '[[rule]]\nname = "a"\nweekly = "daily"\ntemplate = "always"\n'
    )
    assert main(preview(timed, "--at", "2026-12-01T10:00")) == 0
    out = capsys.readouterr().out
    assert "window: (none within 400 days) to (none within 400 days)\n" in out
    assert out.endswith(
        "--- body.txt ---\nalways\n--- body.html: none, the reply is plain text only ---\n"
    )
