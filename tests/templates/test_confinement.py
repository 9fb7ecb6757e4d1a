"""Templates read nothing outside their folder and build nothing huge.

The security review's finding: ``{% include "default//proc/self/environ" %}`` passed the
old ``..`` check (the joined path became absolute), so ``templates preview`` printed the
API key and the running service mailed it to the sender. Every test here plants a secret
outside the templates folder and checks that no way of naming it reads it, at the level
a user meets it: loading, ``templates check|preview`` and the running service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers.message import InboundMessage
from service.cli import main
from service.templates import TemplateError, TemplateSet, check, path_problem, read_confined
from tests.support.deployment import Deployment, replies_to
from tests.templates.conftest import Files

SECRET = "am_the-secret-api-key-0123456789"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file outside the templates folder holding something a template must never see."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"AGENTMAIL_API_KEY={SECRET}\n")
    return path


def message() -> InboundMessage:
    return InboundMessage(
        event_type="message.received",
        inbox_id="support@example.agentmail.to",
        message_id="<m1@example.com>",
        thread_id="thread-1",
        sender="Jane Doe <jane@example.com>",
        to=("support@example.agentmail.to",),
        subject="Hello",
        text="Hi",
        timestamp=datetime(2025, 1, 6, 9, 30, tzinfo=UTC),
    )


def escapes(secret_file: Path) -> list[str]:
    """Names an attacker would try, each meant to reach ``secret_file``."""
    absolute = str(secret_file)
    return [
        f"default/{absolute}",  # the review's: default + //abs/path joins to the abs path
        absolute,
        f"default/../../{secret_file.parent.name}/{secret_file.name}",
        f"_shared/../../{secret_file.parent.name}/{secret_file.name}",
        f"default\\..\\..\\{secret_file.parent.name}\\{secret_file.name}",
        f"default/./../../{secret_file.parent.name}/{secret_file.name}",
        f"default/body.txt\x00{absolute}",
    ]


#: Each trick of the issue as written in a template's ``include``, by id: the text
#: between the quotes (``{outside}`` is the secret file's absolute path, ``{up}`` the
#: relative way to it from a template folder), and why it is refused.
TRICKS = {
    "review": ("default/{outside}", "has an empty, '.' or '..' part"),
    "absolute": ("{outside}", "is an absolute path"),
    "dot-dot": ("default/{up}", "has an empty, '.' or '..' part"),
    # Jinja reads ``\\`` in a string as one backslash, and ``\x00`` as NUL.
    "backslash": ("default\\\\{up_backslashed}", "contains a backslash"),
    # Nothing but the NUL is wrong with these (no empty or '..' part): refused as such,
    # never passed on to the file system, where it is a ValueError.
    "NUL escaped": ("default/body.txt\\x00{outside}", "contains a control character"),
    "NUL byte": ("default/body.txt\x00{outside}", "contains a control character"),
    "symlink": ("_shared/signature.txt", "leads outside the templates folder"),
}


def plant(trick: str, root: Path, secret_file: Path) -> Path:
    """Write ``default/body.txt`` under ``root`` including the secret file by ``trick``
    on its line 3 (for ``symlink``, through a link in ``_shared``); return its path."""
    name, _ = TRICKS[trick]
    up = f"../../{secret_file.parent.name}/{secret_file.name}"
    name = name.format(outside=secret_file, up=up, up_backslashed=up.replace("/", "\\\\"))
    body = root / "default" / "body.txt"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text("Hello\n\n{% include '" + name + "' %}\n", encoding="utf-8")
    if trick == "symlink":
        (root / "_shared").mkdir()
        (root / "_shared" / "signature.txt").symlink_to(secret_file)
    return body


@pytest.mark.parametrize(
    "statement",
    [
        "{{% include {name!r} %}}",
        "{{% include [{name!r}] %}}",
        "{{% extends {name!r} %}}",
        "{{% import {name!r} as m %}}",
        "{{% from {name!r} import x %}}",
    ],
)
def test_every_way_of_naming_an_outside_file_is_refused_at_load(
    folder: Files, secret_file: Path, statement: str
) -> None:
    """Each escape in each loading statement stops loading at the file and line."""
    for name in escapes(secret_file):
        root = folder(
            {"_shared/x.txt": "x\n", "default/body.txt": "Hi\n" + statement.format(name=name)}
        )
        with pytest.raises(TemplateError) as caught:
            TemplateSet.load(root)
        error = caught.value
        assert error.path == str(root / "default" / "body.txt")
        assert error.line == 2
        assert "refused" in error.message
        assert SECRET not in str(error)


def test_a_symlink_leading_outside_is_refused(folder: Files, secret_file: Path) -> None:
    """A name that looks harmless still cannot follow a symlink out of the folder."""
    root = folder({"default/body.txt": "{% include '_shared/signature.txt' %}"})
    (root / "_shared").mkdir()
    (root / "_shared" / "signature.txt").symlink_to(secret_file)
    with pytest.raises(TemplateError, match=r"body\.txt:1: .*leads outside the templates folder"):
        TemplateSet.load(root)


def test_a_template_folder_or_rules_file_symlinked_outside_is_refused(
    folder: Files, secret_file: Path
) -> None:
    """Folders and rules.toml are confined like included files."""
    (secret_file.parent / "body.txt").write_text(secret_file.read_text())
    root = folder({"default/body.txt": "Hi\n"})
    (root / "evil").symlink_to(secret_file.parent, target_is_directory=True)
    (root / "rules.toml").symlink_to(secret_file)
    problems = check(root)
    assert f"{root / 'evil'}: leads outside the templates folder" in problems
    assert f"{root / 'rules.toml'}: leads outside the templates folder" in problems
    assert not any(SECRET in problem for problem in problems)


def test_the_file_opened_is_checked_not_only_the_path_before(
    tmp_path: Path, secret_file: Path
) -> None:
    """The security review swapped a symlink between the path check and the open (191
    leaks in 2,000 renders). What is read is checked after opening: a link that leads
    out when it is opened is refused, whatever was checked before."""
    root = tmp_path / "templates"
    (root / "_p").mkdir(parents=True)
    (root / "_p" / "real.txt").write_text("inside\n")
    link = root / "_p" / "swapped.txt"
    link.symlink_to(secret_file)  # as the swap left it at the moment of opening
    assert read_confined(root / "_p" / "real.txt", root.resolve()) == "inside\n"
    assert read_confined(link, root.resolve()) is None


def test_symlinks_inside_the_folder_still_work(folder: Files) -> None:
    """Kubernetes mounts a ConfigMap as symlinks into a hidden ``..data`` folder."""
    root = folder(
        {
            "..data/default/body.txt": "Hi {{ sender.name }}\n{% include '_shared/sig.txt' %}",
            "..data/_shared/sig.txt": "-- Support\n",
        }
    )
    (root / "default").symlink_to(root / "..data" / "default", target_is_directory=True)
    (root / "_shared").symlink_to("..data/_shared", target_is_directory=True)
    assert TemplateSet.load(root).render(message()).text == "Hi Jane Doe\n-- Support\n"


def test_a_name_computed_at_render_time_is_refused_then(folder: Files, secret_file: Path) -> None:
    """An include whose name comes from a variable is checked by the loader when rendered:
    the reply fails with file and line instead of carrying the file, and ``check``
    reports it."""
    root = folder(
        {
            "default/body.txt": "Hi\n{% include vars.signature %}\n",
            "rules.toml": f'[vars]\nsignature = "default/{secret_file}"\n',
        }
    )
    templates = TemplateSet.load(root)
    with pytest.raises(TemplateError) as caught:
        templates.render(message())
    assert str(caught.value).startswith(f"{root / 'default' / 'body.txt'}:2: ")
    assert "refused" in str(caught.value)
    [problem] = {p.split(" (")[0] for p in check(root)}
    assert problem == str(caught.value)
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("default/body.txt", None),
        ("_shared/deep/sig.txt", None),
        ("/etc/passwd", "is an absolute path"),
        ("default//etc/passwd", "has an empty, '.' or '..' part"),
        ("default/../x.txt", "has an empty, '.' or '..' part"),
        ("default/body.txt\x00.html", "contains a control character"),
        ("default/line\nbreak", "contains a control character"),
        ("default\\body.txt", "contains a backslash"),
        ("default/.env", "names a hidden file"),
        ("..data/default/body.txt", "names a hidden file"),
        ("body.txt", "must be FOLDER/FILE, e.g. _partials/signature.txt"),
    ],
)
def test_path_problem(name: str, why: str | None) -> None:
    """The textual check names the first thing wrong with a template name."""
    assert path_problem(name) == why


@pytest.mark.parametrize("trick", TRICKS)
def test_templates_check_reports_the_include_with_file_and_line(
    tmp_path: Path, secret_file: Path, trick: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``autoreply templates check`` used to accept the review's include; now it names
    every trick at its file and line, with why, and a NUL is no crash either."""
    root = tmp_path / "templates"
    body = plant(trick, root, secret_file)
    assert main(["templates", "check", "--dir", str(root)]) == 1
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith(f"{body}:3: ")]
    assert line.startswith(f"{body}:3: template path ")
    assert line.endswith(f"refused: {TRICKS[trick][1]}")
    assert SECRET not in out


@pytest.mark.parametrize("trick", TRICKS)
def test_templates_preview_does_not_print_the_file(
    tmp_path: Path, secret_file: Path, trick: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``autoreply templates preview`` used to print the included file; now it fails."""
    root = tmp_path / "templates"
    body = plant(trick, root, secret_file)
    assert main(["templates", "preview", "--dir", str(root)]) == 1
    captured = capsys.readouterr()
    assert f"{body}:3: template path " in captured.err
    assert f"refused: {TRICKS[trick][1]}" in captured.err
    assert SECRET not in captured.out + captured.err


@pytest.mark.parametrize(
    "expression",
    ["'x' * 10**10", "10**10 * 'x'", "['x'] * 10**9", "2 ** (10**9)", "(10**6) ** (10**6)"],
)
def test_huge_products_are_refused_not_computed(folder: Files, expression: str) -> None:
    """Loading does not fold them and rendering refuses them, instead of filling memory."""
    root = folder({"default/body.txt": "{{ [" + expression + "] | length }}\n"})
    templates = TemplateSet.load(root)
    with pytest.raises(TemplateError, match=r"body\.txt:1: .*result (longer|over)"):
        templates.render(message())


def test_ordinary_products_still_work(folder: Files) -> None:
    root = folder({"default/body.txt": "{{ '-' * 20 }} {{ 2 ** 10 }} {{ 3 * 4 }} {{ 1.5 * 2 }}\n"})
    assert TemplateSet.load(root).render(message()).text == "-" * 20 + " 1024 12 3.0\n"


def test_templates_cannot_change_the_values_they_are_given(folder: Files) -> None:
    """The sandbox is immutable: a template cannot alter ``vars`` for the next reply."""
    root = folder(
        {
            "default/body.txt": "{{ vars.update({'team': 'Hacked'}) }}\n",
            "rules.toml": '[vars]\nteam = "Support"\n',
        }
    )
    with pytest.raises(TemplateError, match="unsafe"):
        TemplateSet.load(root).render(message())


# -- the running service --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("trick", TRICKS)
def test_service_refuses_to_start_with_an_include_outside_the_folder(
    sandbox: Any, tmp_path: Path, secret_file: Path, trick: str
) -> None:
    """``autoreply serve`` stops with the file, line and why before it listens."""
    templates = tmp_path / "templates"
    body = plant(trick, templates, secret_file)
    result = Deployment(sandbox, tmp_path).run(
        "serve", "--port", "1", AUTOREPLY_TEMPLATES_DIR=str(templates)
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{body}:3: template path " in line
    assert line.endswith(f"refused: {TRICKS[trick][1]}")
    assert sandbox.api_key not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.slow
def test_service_never_mails_its_environment(sandbox: Any, tmp_path: Path) -> None:
    """With the include's name in a variable, the service starts; the reply to a message
    then fails for good (dead-lettered with the reason) and nothing is sent."""
    templates = tmp_path / "templates"
    (templates / "default").mkdir(parents=True)
    (templates / "default" / "body.txt").write_text("Hello\n{% include vars.footer %}\n")
    (templates / "rules.toml").write_text('[vars]\nfooter = "default//proc/self/environ"\n')
    deployment = Deployment(sandbox, tmp_path)
    try:
        service = deployment.start(AUTOREPLY_TEMPLATES_DIR=str(templates))
        injected = sandbox.admin.inject(
            from_="Eve <eve@example.com>", to=sandbox.inbox, subject="Hi", text="Hi"
        )
        jobs = deployment.wait_final(1)
        state, reason = jobs[injected["message_id"]]
        assert state == "dead"
        assert reason is not None
        assert "body.txt:2: template path 'default//proc/self/environ' refused" in reason
        assert replies_to(sandbox.admin.sent(), injected["message_id"]) == []
        assert sandbox.api_key not in service.log()
    finally:
        deployment.stop()
