"""Reply templates: loading, rendering and live reloading (the I/O edge of ``handlers``).

A template is a folder holding ``body.txt`` and an optional ``body.html``. The shipped
folders live in ``handlers/templates``; the user's, in ``AUTOREPLY_TEMPLATES_DIR``, shadow
them by name, and the user's ``rules.toml`` picks one per message (``handlers.rules``).
Everything is compiled when loaded, so a typo fails at startup or reload with the file
and line instead of at send time; rendering uses Jinja2's sandbox and ``StrictUndefined``
so a missing variable is an error, never "Hello ,". See ``docs/templates.md``.
"""

from __future__ import annotations

import asyncio
import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import structlog
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

import handlers
from handlers import reply
from handlers.message import InboundMessage
from handlers.modes import ReplyMode
from handlers.rules import TEMPLATE_NAME, Choice, Rules, RulesError, choose, parse_rules
from handlers.schedule import Period, instant
from handlers.schedule import zone as schedule_zone

#: Where the shipped templates live.
SHIPPED_DIR = Path(handlers.__file__).parent / "templates"
#: The files of a template folder; ``body.txt`` is required.
TEXT_FILE, HTML_FILE = "body.txt", "body.html"
RULES_FILE = "rules.toml"
#: The longest string or list a template may build with ``*`` or ``**`` (a reply is
#: far smaller; ``{{ "x" * 10**10 }}`` would otherwise take the process down).
MAX_PRODUCT = 1_000_000

log = structlog.get_logger(__name__)


class TemplateError(Exception):
    """A template or the rules file is broken; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True, kw_only=True, slots=True)
class RenderedReply:
    """A rendered reply: the bodies exactly as sent, and what produced them."""

    template: str
    #: The rule that chose the template (or whose vars were used); None for the default.
    rule: str | None
    text: str
    html: str | None
    #: The reply mode the matching rule sets; None leaves it to ``AUTOREPLY_MODE``.
    mode: ReplyMode | None = None


def parse_timezone(name: str) -> ZoneInfo:
    """The ``zoneinfo`` zone called ``name``; ``ValueError`` with a clear message if none
    (see ``handlers.schedule.zone``)."""
    return schedule_zone(name)


def template_context(
    message: InboundMessage,
    *,
    variables: Mapping[str, Any],
    received_at: datetime,
    timezone: ZoneInfo,
    window: Period | None = None,
) -> dict[str, Any]:
    """The documented variables every template sees (``docs/templates.md``).

    ``window`` is the stretch of time during which the chosen rule's ``weekly`` or
    ``dates`` condition holds around ``received_at`` (``window.end``: when the office
    opens again); None for a rule without one, and for the default template.
    """
    return {
        "sender": {"name": message.sender_name, "address": message.sender_address},
        "subject": message.subject or "",
        "inbox": {"id": message.inbox_id, "address": message.inbox_id.lower()},
        "thread_id": message.thread_id,
        "message_id": message.message_id,
        "received_at": received_at.astimezone(timezone),
        "preview": reply.preview_of(message),
        "vars": dict(variables),
        "window": None if window is None else {"start": window.start, "end": window.end},
    }


@dataclass(frozen=True, slots=True)
class _Folder:
    name: str
    path: Path
    shown: str  # the path as the user should see it in messages
    #: The resolved templates folder this one belongs to: nothing outside it is read.
    root: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class TemplateSet:
    """Every template and the rules, compiled; immutable, so safe to swap atomically."""

    directory: Path | None
    timezone: ZoneInfo
    rules: Rules
    _env: _Environment = field(repr=False)
    _folders: Mapping[str, _Folder] = field(repr=False)

    @classmethod
    def load(cls, directory: Path | None, *, timezone: str = "UTC") -> TemplateSet:
        """Load and compile the shipped templates, the user's and ``rules.toml``.

        Raises the first ``TemplateError`` found; ``check`` reports all of them.
        """
        loaded, errors = _load(directory, timezone=timezone)
        if errors:
            raise errors[0]
        assert loaded is not None
        return loaded

    @property
    def names(self) -> tuple[str, ...]:
        """Every template name, sorted (partial folders starting with ``_`` excluded)."""
        return tuple(sorted(n for n in self._folders if not n.startswith("_")))

    def source(self, name: str) -> str:
        """Where template ``name`` comes from, as a path to show the user."""
        return self._folder(name).shown

    def choose(
        self,
        message: InboundMessage,
        *,
        received_at: datetime | None = None,
        template: str | None = None,
    ) -> Choice:
        """The template for ``message``: forced by name, else chosen by the rules.

        ``received_at`` (when AgentMail received it) defaults to the message's
        timestamp, else the current time; the rules' time conditions are read on it.
        """
        when = received_at or message.timestamp or datetime.now(UTC)
        if template is None:
            return choose(self.rules, message, received_at=when)
        self._folder(template)
        return self.rules.for_template(template, received_at=when)

    def render(
        self,
        message: InboundMessage,
        *,
        received_at: datetime | None = None,
        template: str | None = None,
    ) -> RenderedReply:
        """Render the reply to ``message``; any failure is raised as ``TemplateError``.

        ``received_at`` defaults to the message's timestamp, else the current time.
        """
        when = received_at or message.timestamp or datetime.now(UTC)
        choice = self.choose(message, received_at=when, template=template)
        return self.render_choice(choice, message, received_at=when)

    def render_choice(
        self, choice: Choice, message: InboundMessage, *, received_at: datetime | None = None
    ) -> RenderedReply:
        """Render the template of an explicit ``choice`` (used by ``check`` and the CLI).

        A choice made by a ``skip`` rule has nothing to render: ``ValueError``.
        """
        if choice.template is None:
            raise ValueError(f"rule {choice.rule_name!r} skips: there is no reply to render")
        folder = self._folder(choice.template)
        when = received_at or message.timestamp or datetime.now(UTC)
        context = template_context(
            message,
            variables=choice.variables,
            received_at=when,
            timezone=self.timezone,
            window=choice.window,
        )
        html = None
        if (folder.path / HTML_FILE).is_file():
            html = self._render(folder, HTML_FILE, context)
        return RenderedReply(
            template=choice.template,
            rule=choice.rule_name,
            text=self._render(folder, TEXT_FILE, context),
            html=html,
            mode=choice.mode,
        )

    def _folder(self, name: str) -> _Folder:
        folder = self._folders.get(name)
        if folder is None or name.startswith("_"):
            where = str(self.directory or SHIPPED_DIR)
            raise TemplateError(where, 0, f"no template {name!r} (have: {', '.join(self.names)})")
        return folder

    def _render(self, folder: _Folder, file: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(f"{folder.name}/{file}").render(context)
        except Exception as exc:
            raise _runtime_error(exc, self._folders, f"{folder.shown}/{file}") from exc


def _load(
    directory: Path | None, *, timezone: str
) -> tuple[TemplateSet | None, list[TemplateError]]:
    zone = parse_timezone(timezone)
    errors: list[TemplateError] = []
    folders = _discover(SHIPPED_DIR, errors)
    if directory is not None:
        if not directory.is_dir():
            return None, [TemplateError(str(directory), 0, "not a directory")]
        folders.update(_discover(directory, errors))
    env = _environment(folders)
    for folder in folders.values():
        _compile(env, folder, errors)
    parsed = _load_rules(directory, folders, errors, zone)
    if errors:
        return None, errors
    loaded = TemplateSet(
        directory=directory, timezone=zone, rules=parsed, _env=env, _folders=folders
    )
    return loaded, []


def _discover(root: Path, errors: list[TemplateError]) -> dict[str, _Folder]:
    found: dict[str, _Folder] = {}
    resolved = root.resolve()
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        folder = _Folder(path.name, path, str(path), resolved)
        if not path.resolve().is_relative_to(resolved):
            errors.append(TemplateError(str(path), 0, "leads outside the templates folder"))
        elif path.name.startswith("_"):
            found[path.name] = folder
        elif TEMPLATE_NAME.fullmatch(path.name) is None:
            errors.append(TemplateError(str(path), 0, "not a valid template name"))
        elif not (path / TEXT_FILE).is_file():
            errors.append(TemplateError(str(path), 0, f"a template folder needs {TEXT_FILE}"))
        elif (path / "subject.txt").exists():
            message = "not used: replies keep the subject ('Re: ...'); remove this file"
            errors.append(TemplateError(str(path / "subject.txt"), 0, message))
        else:
            found[path.name] = folder
    return found


class RefusedTemplatePath(jinja2.TemplateNotFound):
    """An ``include``, ``extends`` or ``import`` name that could read outside the folder."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, f"template path {name!r} refused: {why}")
        self.why = why


def path_problem(name: str) -> str | None:
    """Why the template name ``name`` (``FOLDER/FILE``) may not be loaded, or None.

    Names are checked as text first (absolute paths, ``..``, hidden files, backslashes,
    NUL and other control characters), then, when loading, by resolved path: a name
    that passes here still cannot follow a symlink out of the templates folder.
    """
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "contains a control character"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if len(parts) < 2:
        return "must be FOLDER/FILE, e.g. _partials/signature.txt"
    for part in parts:
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' part"
        if part.startswith("."):
            return "names a hidden file"
    return None


class _Environment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` bounded (see ``MAX_PRODUCT``).

    Intercepting the operators also stops Jinja from folding constant expressions
    at compile time, where ``{{ "x" * 10**10 }}`` would run while loading.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        """Refuse products and powers whose result would be huge; compute the rest."""
        if op == "*":
            if _repeated_length(left, right) > MAX_PRODUCT:
                raise SecurityError(f"result longer than {MAX_PRODUCT} items")
            return operator.mul(left, right)
        ints = isinstance(left, int) and isinstance(right, int)
        if ints and abs(left) > 1 and right * left.bit_length() > MAX_PRODUCT:
            raise SecurityError(f"result over {MAX_PRODUCT} bits")
        return operator.pow(left, right)


def _repeated_length(left: Any, right: Any) -> int:
    """The length of ``left * right`` when it repeats a string or a list, else 0."""
    for sized, times in ((left, right), (right, left)):
        if isinstance(sized, str | list | tuple) and isinstance(times, int):
            return len(sized) * max(times, 0)
    return 0


def read_confined(path: Path, root: Path) -> str | None:
    """The text of ``path`` if the file actually opened lies inside ``root``, else None.

    The resolved-path check before opening leaves a window: a symlink swapped between
    the check and the open would be followed. So the file is opened first and where it
    really is is read from ``/proc/self/fd``; where that is unavailable (not Linux), the
    check before opening is all there is.
    """
    with path.open("rb") as handle:
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
        except OSError:
            opened = None
        if opened is not None and not opened.is_relative_to(root):
            return None
        return handle.read().decode("utf-8")


def _environment(folders: Mapping[str, _Folder]) -> _Environment:
    """One sandboxed environment; ``name/file`` resolves in the folder that won the name.

    Every name goes through ``path_problem`` and must resolve (symlinks followed)
    inside the templates folder it came from: no file elsewhere on the host can be
    read by a template, whatever its ``include`` says.
    """

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        why = path_problem(name)
        if why is not None:
            raise RefusedTemplatePath(name, why)
        folder_name, _, file = name.partition("/")
        folder = folders.get(folder_name)
        if folder is None:
            return None
        path = folder.path / file
        if not path.resolve().is_relative_to(folder.root):
            raise RefusedTemplatePath(name, "leads outside the templates folder")
        if not path.is_file():
            return None
        text = read_confined(path, folder.root)
        if text is None:
            raise RefusedTemplatePath(name, "leads outside the templates folder")
        return text, f"{folder.shown}/{file}", lambda: True

    return _Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), default_for_string=False, default=False
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def _compile(env: _Environment, folder: _Folder, errors: list[TemplateError]) -> None:
    files = [TEXT_FILE, HTML_FILE]
    if folder.name.startswith("_"):
        files = sorted(p.name for p in folder.path.iterdir() if p.suffix in {".txt", ".html"})
    for file in files:
        if not (folder.path / file).is_file():
            continue
        name, shown = f"{folder.name}/{file}", f"{folder.shown}/{file}"
        try:
            env.get_template(name)
            source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            _check_references(env, env.parse(source, name, shown), shown, errors)
        except RefusedTemplatePath as exc:
            errors.append(TemplateError(shown, 0, exc.message or "refused"))
        except jinja2.TemplateSyntaxError as exc:
            errors.append(
                TemplateError(exc.filename or shown, exc.lineno, exc.message or "syntax error")
            )
        except UnicodeDecodeError:
            errors.append(TemplateError(shown, 0, "not UTF-8 text"))


def _check_references(
    env: _Environment, tree: nodes.Template, shown: str, errors: list[TemplateError]
) -> None:
    """Report, at the line that names it, every constant ``include``, ``extends`` or
    ``import`` that is refused or missing, so ``check`` and startup catch it before any
    message is rendered. Names computed at render time are checked by the loader then.
    """
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target: nodes.Expr = node.template  # type: ignore[attr-defined]
        names = target.items if isinstance(target, nodes.List | nodes.Tuple) else [target]
        for item in names:
            if not (isinstance(item, nodes.Const) and isinstance(item.value, str)):
                continue
            try:
                env.get_template(item.value)
            except RefusedTemplatePath as exc:
                errors.append(TemplateError(shown, node.lineno, exc.message or "refused"))
            except jinja2.TemplateNotFound:
                if not getattr(node, "ignore_missing", False):
                    message = f"included template {item.value!r} not found"
                    errors.append(TemplateError(shown, node.lineno, message))
            except jinja2.TemplateError:
                pass  # the included file's own error is reported where it is compiled


def _load_rules(
    directory: Path | None,
    folders: Mapping[str, _Folder],
    errors: list[TemplateError],
    zone: ZoneInfo,
) -> Rules:
    path = directory / RULES_FILE if directory is not None else None
    if path is None or not path.is_file():
        parsed = Rules()
    elif directory is not None and not path.resolve().is_relative_to(directory.resolve()):
        errors.append(TemplateError(str(path), 0, "leads outside the templates folder"))
        return Rules()
    else:
        try:
            parsed = parse_rules(path.read_text(encoding="utf-8"), timezone=zone)
        except RulesError as exc:
            errors.append(TemplateError(str(path), exc.line, exc.message))
            return Rules()
        except UnicodeDecodeError:
            errors.append(TemplateError(str(path), 0, "not UTF-8 text"))
            return Rules()
    shown = str(path or SHIPPED_DIR)
    known = sorted(n for n in folders if not n.startswith("_"))
    uses = [(r.template, r.line, f"rule {r.name!r}") for r in parsed.rules if r.template]
    uses.append((parsed.default, parsed.default_line, "default"))
    for template, line, who in uses:
        if template not in known:
            message = f"{who}: no template folder {template!r} (have: {', '.join(known)})"
            errors.append(TemplateError(shown, line, message))
    return parsed


def rules_of(directory: Path | None) -> Rules:
    """The rules of ``directory``'s ``rules.toml`` alone, no template compiled (empty
    without a folder or a file): for what depends on the rules but not on rendering, such
    as which event types the webhook needs. A broken file raises ``TemplateError``."""
    if directory is None:
        return Rules()
    path = directory / RULES_FILE
    if not path.is_file():
        return Rules()
    if not path.resolve().is_relative_to(directory.resolve()):
        raise TemplateError(str(path), 0, "leads outside the templates folder")
    try:
        return parse_rules(path.read_text(encoding="utf-8"))
    except RulesError as exc:
        raise TemplateError(str(path), exc.line, exc.message) from None
    except UnicodeDecodeError:
        raise TemplateError(str(path), 0, "not UTF-8 text") from None


def _runtime_error(exc: Exception, folders: Mapping[str, _Folder], fallback: str) -> TemplateError:
    """Turn a render failure into a ``TemplateError`` at the template line that raised it.

    Jinja rewrites tracebacks so template frames carry the template's file name and
    line; the innermost such frame is where the error is.
    """
    shown_roots = tuple(f.shown + "/" for f in folders.values())
    where, line = fallback, 0
    for frame_file, frame_line in _frames(exc.__traceback__):
        if frame_file.startswith(shown_roots):
            where, line = frame_file, frame_line
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.filename:
        where, line = exc.filename, exc.lineno
    message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
    if isinstance(exc, RefusedTemplatePath):
        message = exc.message or "refused"
    elif isinstance(exc, jinja2.TemplateNotFound):
        message = f"included template {exc.name!r} not found"
    elif not isinstance(exc, jinja2.TemplateError):
        message = f"{type(exc).__name__}: {message}"
    return TemplateError(where, line, message)


def _frames(tb: TracebackType | None) -> Iterator[tuple[str, int]]:
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next


class LiveTemplates:
    """The current ``TemplateSet``, reloaded on demand or when the folder changes.

    A broken edit keeps the last good set, so replies never go out from a half-saved
    template. The service calls ``reload()`` on SIGHUP and runs ``watch()`` as a task.
    """

    def __init__(self, directory: Path | None, *, timezone: str = "UTC") -> None:
        """Load the templates now; a ``TemplateError`` here should stop the service."""
        self.directory, self._timezone = directory, timezone
        self._lock = threading.Lock()
        self._stamp = _stamp(directory)
        self._current = TemplateSet.load(directory, timezone=timezone)

    @property
    def current(self) -> TemplateSet:
        """The last set that loaded without error."""
        return self._current

    def render(
        self,
        message: InboundMessage,
        *,
        received_at: datetime | None = None,
        choice: Choice | None = None,
        using: TemplateSet | None = None,
    ) -> RenderedReply:
        """Render with the current set (see ``TemplateSet.render``), or with ``using``,
        the set a ``choice`` made earlier came from (the worker chooses the rule when it
        decides, and renders that very choice even if a reload came in between)."""
        loaded = using or self._current
        if choice is None:
            return loaded.render(message, received_at=received_at)
        return loaded.render_choice(choice, message, received_at=received_at)

    def reload(self) -> TemplateError | None:
        """Load the folder again; on error keep the current set and return the error.

        The caller logs the outcome (the service does so on SIGHUP; ``watch`` does too).
        """
        with self._lock:
            self._stamp = _stamp(self.directory)
            try:
                fresh = TemplateSet.load(self.directory, timezone=self._timezone)
            except TemplateError as exc:
                return exc
            self._current = fresh
        return None

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the folder's files every ``interval`` seconds and reload on any change.

        Logs ``templates_reloaded`` or ``templates_reload_failed`` (with ``file:line``).
        Returns at once when there is no user folder; otherwise runs until cancelled.
        """
        if self.directory is None:
            return
        while True:
            await asyncio.sleep(interval)
            stamp = await asyncio.to_thread(_stamp, self.directory)
            if stamp == self._stamp:
                continue
            error = await asyncio.to_thread(self.reload)
            if error is None:
                log.info("templates_reloaded", trigger="file_change")
            else:
                log.error("templates_reload_failed", trigger="file_change", error=str(error))


def _stamp(directory: Path | None) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes of the folder's files: cheap change detection."""
    if directory is None or not directory.is_dir():
        return ()
    stamps = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or path.name.endswith("~"):
            continue
        try:
            stat = path.stat()
        except OSError:  # removed while we looked; the next poll sees the new state
            continue
        stamps.append((str(relative), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(stamps))


#: When the sample messages of ``check`` were received: a fixed Monday morning.
SAMPLE_TIME = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
_SAMPLE_INBOX = "inbox@example.agentmail.to"


def sample_messages() -> tuple[tuple[str, InboundMessage], ...]:
    """Messages that exercise the corners templates trip on, named for error messages."""

    def sample(**fields: Any) -> InboundMessage:
        base: dict[str, Any] = {
            "event_type": "message.received",
            "inbox_id": _SAMPLE_INBOX,
            "message_id": "<sample@example.com>",
            "thread_id": "sample-thread",
            "to": (_SAMPLE_INBOX,),
            "timestamp": SAMPLE_TIME,
        }
        return InboundMessage(**(base | fields))

    text = "Hello,\n\nCould you tell me when my order ships?\n\n> earlier quoted text\n"
    return (
        ("named sender", sample(sender="Jane Doe <jane@example.com>", subject="Order", text=text)),
        ("bare address, no subject", sample(sender="bob@example.org", html="<p>Hi there</p>")),
        (
            "markup and unicode",
            sample(
                sender='"Zoë <Ångström>" <zoe@example.net>',
                subject='<script>alert("x")</script> & "quotes"',
                text="word " * 100,
            ),
        ),
    )


def check(directory: Path | None, *, timezone: str = "UTC") -> list[str]:
    """Every problem in the folder as ``path:line: message``; empty when all is well.

    Compiles everything, then renders each template against ``sample_messages()`` with
    the variables of every rule that can choose it (templates no rule names get the
    global ``[vars]``), so per-rule variables are checked where they are used.
    """
    loaded, errors = _load(directory, timezone=timezone)
    if loaded is None:
        return [str(error) for error in errors]
    problems: dict[tuple[str, str | None], str] = {}
    for choice, received_at in _reachable_choices(loaded):
        for label, message in sample_messages():
            try:
                loaded.render_choice(choice, message, received_at=received_at)
            except TemplateError as exc:
                who = f"rule {choice.rule_name!r}" if choice.rule_name else "no rule"
                problems.setdefault((str(exc), choice.rule_name), f"{exc} ({who}, {label})")
    return list(problems.values())


def _reachable_choices(loaded: TemplateSet) -> list[tuple[Choice, datetime]]:
    """Every way a template can be rendered, with a time at which it would be: a rule
    with a time condition is rendered at a moment it holds (its first date range's
    start, else the first moment after ``SAMPLE_TIME``), so its ``window`` is set."""
    parsed = loaded.rules
    choices: list[tuple[Choice, datetime]] = []
    for rule in parsed.rules:
        if rule.template is None:
            continue
        when = SAMPLE_TIME
        if rule.schedule.dates:
            first = min(d.start for d in rule.schedule.dates)
            when = instant(first, rule.schedule.zone)
        elif rule.schedule:
            when = rule.schedule.first_start(SAMPLE_TIME) or SAMPLE_TIME
        choices.append((parsed.choice(rule, received_at=when), when))
    choices.append((parsed.choice(None), SAMPLE_TIME))
    named = {choice.template for choice, _ in choices}
    choices += [
        (Choice(template=name, rule_name=None, variables=dict(parsed.variables)), SAMPLE_TIME)
        for name in loaded.names
        if name not in named
    ]
    return choices
