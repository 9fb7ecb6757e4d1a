"""Pure decisions of the auto-reply service: no I/O, no clock, no network.

Everything here takes plain values and returns plain values, so it is tested without
a database, a server or a sandbox.
"""

from __future__ import annotations
