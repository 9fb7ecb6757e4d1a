"""Template loading and rendering: errors with file:line, strictness, escaping, reloading."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from handlers.message import InboundMessage
from service.templates import LiveTemplates, TemplateError, TemplateSet, check
from tests.support.waiting import until
from tests.templates.conftest import Files


def message(**fields: Any) -> InboundMessage:
    base: dict[str, Any] = {
        "event_type": "message.received",
        "inbox_id": "support@example.agentmail.to",
        "message_id": "<m1@example.com>",
        "thread_id": "thread-1",
        "sender": "Jane Doe <jane@example.com>",
        "to": ("support@example.agentmail.to",),
        "subject": "Where is my order?",
        "text": "Hi,\nwhere is my order?\n> quoted\n",
        "timestamp": datetime(2025, 1, 6, 9, 30, tzinfo=UTC),
    }
    return InboundMessage(**(base | fields))


def test_shipped_default_works_without_configuration() -> None:
    """With no folder configured, every message gets a short, plain, personal reply."""
    reply = TemplateSet.load(None).render(message())
    assert reply.template == "default"
    assert reply.rule is None
    assert reply.html is None
    assert reply.text.startswith("Hello Jane Doe,\n")
    assert '"Where is my order?"' in reply.text
    assert reply.text.endswith("automatic reply: there is no need to respond to it.\n")


def test_default_without_subject_or_display_name() -> None:
    """The shipped default reads well when the sender has no name and there is no subject."""
    reply = TemplateSet.load(None).render(message(sender="bob@example.org", subject=None))
    assert reply.text.startswith("Hello bob@example.org,\n")
    assert "Thank you for your message. It has" in reply.text


def test_documented_context(folder: Files) -> None:
    """Every documented variable is available with the documented meaning."""
    body = (
        "{{ sender.name }}|{{ sender.address }}|{{ subject }}|{{ inbox.id }}|{{ inbox.address }}|"
        "{{ thread_id }}|{{ message_id }}|{{ received_at.isoformat() }}|{{ preview }}|"
        "{{ vars.team }}\n"
    )
    root = folder({"default/body.txt": body, "rules.toml": '[vars]\nteam = "Ops"\n'})
    reply = TemplateSet.load(root, timezone="Europe/Paris").render(message())
    assert reply.text == (
        "Jane Doe|jane@example.com|Where is my order?|support@example.agentmail.to|"
        "support@example.agentmail.to|thread-1|<m1@example.com>|2025-01-06T10:30:00+01:00|"
        "Hi, where is my order?|Ops\n"
    )


def test_received_at_falls_back_and_can_be_given(folder: Files) -> None:
    """received_at is the message time unless the caller passes one."""
    root = folder({"default/body.txt": "{{ received_at.strftime('%H:%M %Z') }}"})
    templates = TemplateSet.load(root, timezone="America/New_York")
    assert templates.render(message()).text == "04:30 EST"
    later = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    assert templates.render(message(), received_at=later).text == "08:00 EDT"


def test_user_template_shadows_the_shipped_one(folder: Files) -> None:
    """A user folder named like a shipped template replaces it as a whole."""
    root = folder({"default/body.txt": "Ours.\n"})
    assert TemplateSet.load(root).render(message()).text == "Ours.\n"


def test_trailing_newline_is_kept_and_block_lines_vanish(folder: Files) -> None:
    """Block tags on their own line leave no blank line; the final newline stays."""
    body = "Hi\n{% if subject %}\nRe: {{ subject }}\n{% endif %}\nBye\n"
    root = folder({"default/body.txt": body})
    assert TemplateSet.load(root).render(message()).text == "Hi\nRe: Where is my order?\nBye\n"


def test_syntax_error_names_file_and_line(folder: Files) -> None:
    """A typo stops loading with the file and line to fix."""
    root = folder({"default/body.txt": "Hello\n\n{% if subject %}\n{% endfor %}\n"})
    with pytest.raises(TemplateError) as caught:
        TemplateSet.load(root)
    assert str(caught.value).startswith(f"{root}/default/body.txt:4: Encountered unknown tag")
    assert (caught.value.path, caught.value.line) == (f"{root}/default/body.txt", 4)


def test_syntax_error_in_html_names_file_and_line(folder: Files) -> None:
    """The HTML body is compiled at load time too."""
    root = folder({"default/body.txt": "ok\n", "default/body.html": "<p>\n{{ sender.name }\n"})
    with pytest.raises(TemplateError, match=rf"^{root}/default/body.html:2: "):
        TemplateSet.load(root)


def test_undefined_variable_is_an_error_never_blank(folder: Files) -> None:
    """StrictUndefined: a misspelt variable fails instead of sending "Hello ,"."""
    root = folder({"default/body.txt": "Line one\nHello {{ sender.nickname }},\n"})
    templates = TemplateSet.load(root)
    with pytest.raises(TemplateError) as caught:
        templates.render(message())
    assert str(caught.value) == (
        f"{root}/default/body.txt:2: 'dict object' has no attribute 'nickname'"
    )


@pytest.mark.parametrize(
    "body",
    [
        "{{ vars.missing }}",
        "{% if vars.missing %}x{% endif %}",
        "{{ undefined_name | upper }}",
        "{% for x in nothing %}{% endfor %}",
    ],
)
def test_every_use_of_an_undefined_value_fails(folder: Files, body: str) -> None:
    """Printing, testing, filtering or looping over an undefined value is an error."""
    templates = TemplateSet.load(folder({"default/body.txt": body}))
    with pytest.raises(TemplateError, match=r"undefined|has no attribute"):
        templates.render(message())


@pytest.mark.parametrize(
    "body",
    [
        "{{ 1 // 0 }}",
        "{{ subject.__class__.__mro__ }}",
        "{{ received_at.__reduce_ex__(2) }}",
        "{% include 'nowhere/' ~ 'body.txt' %}",
    ],
)
def test_runtime_failures_are_template_errors(folder: Files, body: str) -> None:
    """Whatever goes wrong while rendering surfaces as TemplateError, with the file."""
    templates = TemplateSet.load(folder({"default/body.txt": "line\n" + body}))
    with pytest.raises(TemplateError, match=r"/default/body\.txt:\d+: "):
        templates.render(message())


def test_html_is_autoescaped_and_text_is_not(folder: Files) -> None:
    """Sender-controlled values cannot inject markup into the HTML body."""
    root = folder(
        {
            "default/body.txt": "{{ subject }} / {{ sender.name }}\n",
            "default/body.html": "<p>{{ subject }} / {{ sender.name }}</p>\n",
        }
    )
    evil = message(subject="<script>alert(1)</script>", sender='"A & B" <ab@example.com>')
    reply = TemplateSet.load(root).render(evil)
    assert reply.text == "<script>alert(1)</script> / A & B\n"
    assert reply.html == "<p>&lt;script&gt;alert(1)&lt;/script&gt; / A &amp; B</p>\n"


def test_partials_can_be_included(folder: Files) -> None:
    """Folders starting with _ hold shared pieces and are not templates themselves."""
    root = folder(
        {
            "_shared/signature.txt": "-- \n{{ vars.team }}\n",
            "default/body.txt": "Thanks.\n{% include '_shared/signature.txt' %}",
            "rules.toml": '[vars]\nteam = "Support"\n',
        }
    )
    templates = TemplateSet.load(root)
    assert templates.names == ("default",)
    assert templates.render(message()).text == "Thanks.\n-- \nSupport\n"


def test_syntax_error_in_a_partial_is_found_at_load(folder: Files) -> None:
    """Partials are compiled with everything else."""
    root = folder({"_shared/sig.txt": "{{ oops\n"})
    with pytest.raises(TemplateError, match=rf"^{root}/_shared/sig.txt:1: "):
        TemplateSet.load(root)


def test_rules_choose_the_template(folder: Files) -> None:
    """rules.toml picks a template per message; the reply says which rule did."""
    root = folder(
        {
            "billing/body.txt": "Billing: {{ vars.team }}\n",
            "rules.toml": (
                '[vars]\nteam = "all"\n\n[[rule]]\nname = "invoices"\nsubject = "invoice"\n'
                'template = "billing"\n[rule.vars]\nteam = "accounts"\n'
            ),
        }
    )
    templates = TemplateSet.load(root)
    reply = templates.render(message(subject="Invoice 42"))
    assert (reply.template, reply.rule, reply.text) == (
        "billing",
        "invoices",
        "Billing: accounts\n",
    )
    assert templates.render(message()).template == "default"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"rules.toml": 'default = "x"\n[[rule]\n'}, r"rules\.toml:2: "),
        (
            {"rules.toml": '\n[[rule]]\nname = "a"\ntemplate = "missing"\n'},
            r"rules\.toml:2: rule 'a': no template folder 'missing' \(have: default\)",
        ),
        ({"rules.toml": 'default = "nope"\n'}, r"rules\.toml:1: default: no template folder"),
        ({"rules.toml": '[[rule]]\nname = "a"\ntemplate = "default"\nsubject = "("\n'}, ":4: "),
        ({"empty/notes.md": "x"}, r"/empty: a template folder needs body\.txt"),
        ({"x/body.txt": "x", "x/subject.txt": "y"}, r"/x/subject\.txt: not used"),
        ({"bad name/body.txt": "x"}, r"bad name: not a valid template name"),
    ],
)
def test_folder_and_rules_errors(folder: Files, files: dict[str, str], expected: str) -> None:
    """Mistakes in the folder layout or rules.toml stop loading with the place to fix."""
    with pytest.raises(TemplateError, match=expected):
        TemplateSet.load(folder(files))


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    """A configured folder that does not exist is reported, not silently ignored."""
    with pytest.raises(TemplateError, match="not a directory"):
        TemplateSet.load(tmp_path / "nope")


def test_unknown_timezone_is_refused() -> None:
    """A misspelt zone fails at load time with a hint."""
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Pariss'"):
        TemplateSet.load(None, timezone="Europe/Pariss")


def test_forcing_an_unknown_template_is_an_error() -> None:
    """Asking for a template that does not exist names the ones that do."""
    with pytest.raises(TemplateError, match=r"no template 'vip' \(have: default\)"):
        TemplateSet.load(None).render(message(), template="vip")


def test_check_reports_every_problem(folder: Files) -> None:
    """check lists all compile errors at once, not just the first."""
    root = folder({"a/body.txt": "{% if %}\n", "b/body.txt": "ok\n{{ x }\n"})
    problems = check(root)
    assert [p.split(": ")[0] for p in problems] == [f"{root}/a/body.txt:1", f"{root}/b/body.txt:2"]


def test_check_renders_with_each_rules_vars(folder: Files) -> None:
    """A template is checked with the vars of every rule that can choose it."""
    root = folder(
        {
            "vip/body.txt": "Dear {{ vars.title }}\n",
            "rules.toml": (
                '[[rule]]\nname = "ok"\nsender = "a@x.com"\ntemplate = "vip"\n'
                '[rule.vars]\ntitle = "Dr"\n\n'
                '[[rule]]\nname = "forgot"\nsender = "b@x.com"\ntemplate = "vip"\n'
            ),
        }
    )
    assert check(root) == [
        f"{root}/vip/body.txt:1: 'dict object' has no attribute 'title' "
        "(rule 'forgot', named sender)"
    ]


def test_check_passes_the_shipped_templates() -> None:
    """The shipped templates render against every sample message."""
    assert check(None) == []


def test_reload_keeps_the_last_good_set(folder: Files) -> None:
    """A broken edit is reported and the previous templates keep answering."""
    root = folder({"default/body.txt": "v1\n"})
    live = LiveTemplates(root)
    folder({"default/body.txt": "v2 {% if %}\n"})
    error = live.reload()
    assert error is not None
    assert str(error).startswith(f"{root}/default/body.txt:1: ")
    assert live.render(message()).text == "v1\n"
    folder({"default/body.txt": "v3\n"})
    assert live.reload() is None
    assert live.render(message()).text == "v3\n"


def test_broken_templates_stop_startup(folder: Files) -> None:
    """LiveTemplates refuses to start from a broken folder."""
    with pytest.raises(TemplateError):
        LiveTemplates(folder({"default/body.txt": "{{ }}\n"}))


async def test_watch_reloads_on_change(folder: Files) -> None:
    """Saving a template is picked up without a restart; a broken save is not."""
    root = folder({"default/body.txt": "before\n"})
    live = LiveTemplates(root)
    task = asyncio.create_task(live.watch(0.01))
    try:
        folder({"default/body.txt": "after the edit\n"})
        await until(
            lambda: live.render(message()).text == "after the edit\n", what="the edit to load"
        )
        assert live.render(message()).text == "after the edit\n"
        with structlog.testing.capture_logs() as logs:
            folder({"default/body.txt": "{% broken\n"})
            await until(lambda: bool(logs), what="a log line about the broken save")
            assert logs
        assert logs[0]["event"] == "templates_reload_failed"
        assert logs[0]["error"].startswith(f"{root}/default/body.txt:1: ")
        assert live.render(message()).text == "after the edit\n"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_without_a_folder_returns() -> None:
    """With only shipped templates there is nothing to watch."""
    await asyncio.wait_for(LiveTemplates(None).watch(0.01), timeout=5)
