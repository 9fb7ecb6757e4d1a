"""What a rule's time condition costs per message: ``choose`` with and without one.

The worker picks a message's rule with ``handlers.rules.choose``; a rule with ``weekly`` or
``dates`` also works out the stretch of time it holds (the ``window`` templates can show).
This times ``choose`` in a tight loop (CPU time, ``time.process_time``) for a few rules
files, against a same-run baseline: the same rules without time conditions.

Run: ``.venv/bin/python bench/schedule.py [--repo PATH] [--calls 2000] [--rounds 5]``
(a round stops after a second of CPU if its calls are not done by then).
``--repo`` imports ``handlers`` from another checkout (e.g. an older commit's worktree),
so two versions can be compared with the same script. Prints a Markdown table of the
median microseconds of CPU per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

RULE = '[[rule]]\nname = "r"\ntemplate = "t"\n'
OFFICE = 'timezone = "Europe/Berlin"\nweekly = ["Mon-Thu 18:00-09:00", "Fri 18:00 - Mon 09:00"]\n'
#: The cases: name, rules text, when the message was received.
CASES = (
    ("baseline: no time condition", RULE, datetime(2026, 12, 2, 12, tzinfo=UTC)),
    ("office hours, closed on Saturday", RULE + OFFICE, datetime(2026, 12, 5, 12, tzinfo=UTC)),
    (
        "office hours + Christmas week, inside it",
        RULE + OFFICE + 'dates = "2026-12-24 - 2027-01-01"\n',
        datetime(2026, 12, 29, 12, tzinfo=UTC),
    ),
    (
        "year's sabbatical beside weekly windows",
        RULE + 'timezone = "Europe/Berlin"\nweekly = ["Mon-Fri 00:00-01:00", "Mon-Fri 12:00-13:00",'
        ' "Sat-Sun"]\ndates = "2026-06-01 - 2027-05-31"\n',
        datetime(2026, 12, 2, 12, tzinfo=UTC),
    ),
    (
        "year's sabbatical, a skip rule",
        RULE.replace('template = "t"', 'action = "skip"')
        + 'timezone = "Europe/Berlin"\nweekly = ["Mon-Fri 00:00-01:00", "Mon-Fri 12:00-13:00",'
        ' "Sat-Sun"]\ndates = "2026-06-01 - 2027-05-31"\n',
        datetime(2026, 12, 2, 12, tzinfo=UTC),
    ),
    (
        "1,000 single days beside the weekend",
        RULE
        + 'weekly = "Sat-Sun"\ndates = ['
        + ", ".join(f'"{date(2026, 1, 1) + timedelta(days=2 * n)}"' for n in range(1000))
        + "]\n",
        datetime(2027, 1, 2, 12, tzinfo=UTC),
    ),
)


def main() -> int:
    """Time every case ``--rounds`` times; print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    from handlers.message import InboundMessage
    from handlers.rules import choose, parse_rules

    message = InboundMessage.from_payload(
        {
            "inbox_id": "desk@example.com",
            "message_id": "<m@example.com>",
            "thread_id": "t",
            "from": "Jane <jane@example.org>",
            "text": "hello",
            "headers": {},
        }
    )
    print(f"handlers from {args.repo.resolve()}\n")
    print("| case | rule | µs CPU per choose() |")
    print("|---|---|---:|")
    for name, text, received in CASES:
        rules = parse_rules(text)
        rounds: list[float] = []
        choice: Any = None
        for _ in range(args.rounds):
            started = time.process_time()
            calls = 0
            # At most a second of CPU a round: the slowest cases take seconds a call.
            while calls < args.calls and (calls == 0 or time.process_time() - started < 1):
                choice = choose(rules, message, received_at=received)
                calls += 1
            rounds.append((time.process_time() - started) / calls * 1e6)
        print(f"| {name} | {choice.rule_name} | {statistics.median(rounds):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
