"""`gigaudit status`: the queue, the workers (heartbeat, device, current job and stage) and the dead letters.

Admin role: the same data as `AdminService.GetStatus`, plus the newest dead letters. QUEUED / RUNNING count jobs
(a sharded job once); LAG counts deliveries no worker has taken yet, PENDING those taken but not yet settled. A
dead worker is listed while it still holds a delivery: its job is reclaimed once its heartbeat has been missing
for the reclaim grace.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import yaml

from gigaudit.commands.common import DefaultsFormatter, add_connection, add_output, client_for, output_format
from gigaudit.output import COLUMNS, human_duration, plain, table

EXIT_OK = 0
RECENT_DEAD_LETTERS = 5
WORKER_COLUMNS = [("WORKER", lambda r: r["name"]), ("DEVICE", lambda r: r["device"]),
                  ("ALIVE", lambda r: "yes" if r["alive"] else "no"),
                  ("HEARTBEAT", lambda r: _ago(r["heartbeat_time"])), ("OPERATION", lambda r: r["operation"]),
                  ("STAGE", lambda r: r["stage"]), ("PROGRESS", lambda r: _progress(r))]


def add_parsers(sub) -> None:
    status = sub.add_parser("status", help="the queue, the workers and the dead letters at a glance (admin role)",
                            description=__doc__, formatter_class=DefaultsFormatter)
    status.add_argument("--dead-letters", type=int, default=RECENT_DEAD_LETTERS, metavar="N",
                        help="show the N newest dead letters (0: only their number)")
    add_output(status)
    add_connection(status)
    status.set_defaults(run=_status)


def _status(args) -> int:
    if not 0 <= args.dead_letters <= 1000:
        raise ValueError(f"--dead-letters must be between 0 and 1000, got {args.dead_letters}")
    with client_for(args) as client:
        status = client.get_status()
        letters = client.list_dead_letters(limit=args.dead_letters) if args.dead_letters and status.dead_letters \
            else []
    view = status_view(status, letters)
    fmt = output_format(args)
    if fmt == "json":
        print(json.dumps(view, indent=2))
    elif fmt == "yaml":
        print(yaml.safe_dump(view, sort_keys=False, allow_unicode=True).rstrip())
    else:
        print(status_table(view))
    return EXIT_OK


def status_view(status, letters=()) -> dict:
    """A `ServiceStatus` (and some dead letters) as plain values, every field present (zeros included)."""
    queue = status.queue
    return {
        "queue": {"queued": queue.queued, "running": queue.running, "lag": queue.lag, "pending": queue.pending},
        "workers": [{"name": w.name, "device": w.device, "alive": w.alive,
                     "heartbeat_time": plain(w.heartbeat_time), "operation": w.operation, "stage": w.stage,
                     "done": w.done, "total": w.total} for w in status.workers],
        "dead_letters": status.dead_letters,
        "recent_dead_letters": [plain(letter) for letter in letters],
    }


def status_table(view: dict) -> str:
    """The status view for a terminal: a queue line, the workers' table, the dead letters."""
    queue = view["queue"]
    lines = [f"QUEUE  queued {queue['queued']}  running {queue['running']}  lag {queue['lag']}  "
             f"pending {queue['pending']}", ""]
    lines.append(table(view["workers"], WORKER_COLUMNS) if view["workers"] else
                 "No workers: none has taken work from the queue since it last stopped.")
    recent = view["recent_dead_letters"]
    lines += ["", f"DEAD LETTERS  {view['dead_letters']}" + (
        f" (newest {len(recent)} below; all: `gigaudit dead-letters list`)" if recent else "")]
    if recent:
        lines.append(table(recent, COLUMNS["gigaudit.v1.DeadLetter"]))
    return "\n".join(lines)


def _ago(stamp: str | None) -> str:
    if not stamp:
        return ""
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    return f"{human_duration(max(0.0, seconds))} ago"


def _progress(row: dict) -> str:
    if not row["operation"]:
        return ""
    return f"{row['done']}/{row['total']}" if row["total"] else str(row["done"] or "")
