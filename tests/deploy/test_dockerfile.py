"""deploy/Dockerfile and .dockerignore, read as the builder reads them.

``make container-test`` builds and runs the image; these tests keep the properties it
cannot see from outside: what enters the build context (no venv, no database, no
``.env`` with its API key), where packages come from, and what the final stage holds.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field

import pytest

from service.settings import Settings
from tests.deploy.conftest import DEPLOY, ROOT


@dataclass
class Stage:
    """One ``FROM`` section: its base, name and instructions (continuations joined)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(base=parts[0], name=name))
        else:
            found[-1].instructions.append((keyword, args.strip()))
    return found


def root_of(stage: Stage, every: list[Stage]) -> str:
    """The external image a stage ultimately starts from."""
    by_name = {s.name: s for s in every if s.name}
    while stage.base in by_name:
        stage = by_name[stage.base]
    return stage.base


def apt_packages(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for run in stage.all("RUN"):
        for match in re.finditer(r"apt-get install ([^&;|]+)", run):
            packages.update(w for w in match[1].split() if not w.startswith("-"))
    return packages


def stage_chain(stage: Stage, every: list[Stage]) -> list[Stage]:
    by_name = {s.name: s for s in every if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def test_final_stage_is_debian_slim_with_debians_python_and_no_compiler() -> None:
    every = stages()
    final = every[-1]
    assert len(every) >= 2, "multi-stage: the build tools stay in the build stage"
    assert root_of(final, every) == "debian:bookworm-slim"
    installed = set().union(*(apt_packages(s) for s in stage_chain(final, every)))
    assert "python3" in installed
    # zoneinfo reads the system's zone files: AUTOREPLY_TIMEZONE and the rules'
    # timezone (Europe/Berlin, Asia/Kathmandu...) resolve only with tzdata.
    assert "tzdata" in installed
    compilers = {"gcc", "g++", "build-essential", "clang", "make", "python3-dev", "python3-pip"}
    assert not installed & compilers
    assert final.all("COPY") == ["--from=build /opt/autoreply /opt/autoreply"]


def test_pip_runs_with_the_certificate_argument_and_the_default_index() -> None:
    every = stages()
    pip_stages = [s for s in every if any("pip install" in run for run in s.all("RUN"))]
    assert pip_stages
    for stage in pip_stages:
        assert "PIP_CERT" in stage.all("ARG")
    text = (DEPLOY / "Dockerfile").read_text().lower()
    for needle in ("index-url", "pip_index", "extra-index", "--trusted-host", "pypi"):
        assert needle not in text


def test_runtime_contract() -> None:
    final = stages()[-1]
    [user] = final.all("USER")
    assert not user.startswith(("0", "root"))
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["autoreply"]
    assert json.loads(final.all("CMD")[0])[0] == "serve"
    assert json.loads(final.all("VOLUME")[0]) == ["/data"]
    [healthcheck] = final.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert re.search(r'CMD \["python3", "-c"', healthcheck)
    env = " ".join(final.all("ENV"))
    url = re.search(r"AUTOREPLY_DATABASE_URL=(\S+)", env)
    assert url is not None
    assert url[1] == "sqlite:////data/autoreply.db"
    settings = Settings.from_environ(
        {
            "AGENTMAIL_API_KEY": "am_x",
            "AUTOREPLY_PUBLIC_URL": "https://a.example",
            "AUTOREPLY_DATABASE_URL": url[1],
        },
        dotenv=None,
    )
    assert settings.database_url == url[1]


# -- .dockerignore ---------------------------------------------------------------------------


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "negations need a real matcher"
    return patterns


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: Go's filepath.Match per segment, ``**`` for any depth."""
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def excluded(path: str, patterns: list[str]) -> bool:
    """A path is left out if it, or a folder it is in, matches a pattern."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(_regex(p).fullmatch(prefix) for p in patterns for prefix in prefixes)


@pytest.mark.slow
def test_build_context_has_what_the_image_needs_and_nothing_private() -> None:
    patterns = ignore_patterns()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    needed = [
        path
        for path in tracked
        if path in ("pyproject.toml", "README.md") or path.startswith(("service/", "handlers/"))
    ]
    assert "handlers/templates/default/body.txt" in needed
    assert [path for path in needed if excluded(path, patterns)] == []
    for private in (
        ".venv/bin/python",
        ".git/config",
        ".env",
        "deploy/.env",
        "autoreply.db",
        "autoreply.db-wal",
        "data/autoreply.db",
        "service/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py",
        ".mypy_cache/3.11/x.json",
        "agentmail_autoreply.egg-info/PKG-INFO",
    ):
        assert excluded(private, patterns), private
