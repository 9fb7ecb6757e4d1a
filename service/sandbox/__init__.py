"""A local stand-in for AgentMail: a subset of its REST API and its Svix webhook sender.

``create_sandbox_app()`` builds the Starlette app (state at ``app.state.sandbox``);
``SandboxClient`` / ``AsyncSandboxClient`` drive its admin API; ``autoreply sandbox``
runs it. See docs/sandbox.md.
"""

from __future__ import annotations

from service.sandbox.app import create_sandbox_app
from service.sandbox.client import AsyncSandboxClient, SandboxClient, SandboxError
from service.sandbox.clock import Clock
from service.sandbox.state import Sandbox

__all__ = [
    "AsyncSandboxClient",
    "Clock",
    "Sandbox",
    "SandboxClient",
    "SandboxError",
    "create_sandbox_app",
]
