"""What the shipped PromQL uses: metric names, label matchers and grouping labels.

A small lexer over PromQL, enough for the expressions of deploy/prometheus/alerts.yaml and
deploy/grafana/autoreply.json (promtool checks their syntax; this finds the names in them).
It does not evaluate anything: it lists every vector selector with its matchers and the
function that directly encloses it, and every label named in ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "autoreply.json"

#: Grafana's built-in variables that stand for durations, as a query would see them.
GRAFANA_DURATIONS = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "6h"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>[0-9][0-9a-zA-Z.]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=,(){}])
    """,
    re.VERBOSE,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{matchers}``, directly inside ``function`` ('' if none)."""

    name: str
    matchers: tuple[Matcher, ...]
    function: str


@dataclass
class Uses:
    """Everything one expression refers to."""

    expr: str
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def substitute_grafana(expr: str) -> str:
    """The expression with Grafana's duration variables replaced by durations."""
    for variable, value in GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, value)
    return expr


def _tokens(expr: str) -> list[tuple[str, str]]:
    found = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[position:]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append((kind, match.group()))
    return found


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return str(json.loads('"' + text[1:-1].replace('"', '\\"') + '"'))


def uses(expr: str) -> Uses:
    """The metric selectors and grouping labels of one PromQL expression."""
    result = Uses(expr)
    tokens = _tokens(substitute_grafana(expr))
    calls: list[str] = []  # the function (or '' for plain parentheses) of each open '('
    pending = ""  # the function whose '(' comes next
    i = 0

    def matchers(start: int) -> tuple[tuple[Matcher, ...], int]:
        """Parse ``{label op "value", ...}`` from the '{' at ``start``; return the end."""
        found = []
        j = start + 1
        while tokens[j][1] != "}":
            (_, label), (_, op), (kind, value) = tokens[j : j + 3]
            assert kind == "string", f"label value expected in {expr!r}"
            found.append(Matcher(label, op, _unquote(value)))
            j += 3
            if tokens[j][1] == ",":
                j += 1
        return tuple(found), j + 1

    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _GROUPING and following == "(":
            j = i + 2
            while tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    result.grouping.add(tokens[j][1])
                j += 1
            i = j + 1
        elif kind == "ident" and (following == "(" or following in ("by", "without")):
            # A function or aggregation; `sum by (x) (...)` opens its '(' after the clause.
            pending = text
            i += 1
        elif kind == "ident" and text.lower() in _KEYWORDS:
            i += 1
        elif kind == "ident" or text == "{":
            name = text if kind == "ident" else ""
            found: tuple[Matcher, ...] = ()
            end = i + 1
            if kind == "ident" and following == "{":
                found, end = matchers(i + 1)
            elif kind != "ident":
                found, end = matchers(i)
                [name] = [m.value for m in found if m.label == "__name__" and m.op == "="]
            result.selectors.append(Selector(name, found, calls[-1] if calls else ""))
            i = end
        elif text == "(":
            calls.append(pending)
            pending = ""
            i += 1
        elif text == ")":
            calls.pop()
            i += 1
        else:
            i += 1
    return result


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yaml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_expressions() -> dict[str, str]:
    """Alert name -> expression."""
    return {rule["alert"]: rule["expr"] for rule in alert_rules()}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def dashboard_expressions() -> dict[str, str]:
    """'panel N "title" #n' -> query, for every query of every panel of the dashboard."""
    found = {}
    for panel in _panels(dashboard()["panels"]):
        for number, target in enumerate(panel.get("targets", []), 1):
            found[f"panel {panel['id']} {panel['title']!r} #{number}"] = target["expr"]
    return found


def dashboard_variable_selectors() -> dict[str, tuple[str, str]]:
    """Variable name -> (selector, label) of its ``label_values(selector, label)`` query."""
    found = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
        assert match, f"variable {variable['name']}: unexpected query {variable['query']!r}"
        found[variable["name"]] = (match.group(1), match.group(2))
    return found


def promtool() -> str:
    """promtool's path; skips the calling test without it, but fails it under CI (which
    installs it: .ci/run)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs the Debian package prometheus")
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS...`` in ``cwd``, its output captured."""
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load_script(path: Path) -> ModuleType:
    """Import a generator script (deploy/ is not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"_generator_{path.parent.name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
