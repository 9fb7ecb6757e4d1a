"""Shared test helpers: a real uvicorn server in a thread, a webhook receiver, SDK clients."""

from __future__ import annotations
