"""``darkd jobs list|show|cancel|pause|resume``: the job queue, read and controlled through the library index.

The index is the job engine's control channel: ``cancel``/``pause``/``resume`` change the job's state there and a
running daemon's engine acts on it within a second (it aborts the current exposure for cancel/pause, and picks a
resumed job up again). Without a running daemon the change simply waits in the queue.

Exit codes: 0 success; 1 no such job, or the job's state does not allow the command; 2 bad configuration, or a
library index that cannot be read or written (read-only, malformed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cli import brief
from daemon.jobs.errors import JobStoreError
from daemon.jobs.states import COMMANDS, JOB_STATES, JobState

if TYPE_CHECKING:  # the library stack is imported by the command that runs (start-up time of every darkd command)
    from daemon.jobs.queue import JobQueue, JobRow
    from daemon.library.catalog import LibraryIndex


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"darkd jobs: {text}\n")


def _open(args: argparse.Namespace) -> LibraryIndex | None:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from daemon.library.catalog import LibraryIndex
    from daemon.settings import load_settings

    try:
        settings = load_settings(args.config)
        return LibraryIndex.open(settings.library)
    except (FileNotFoundError, ValidationError, OSError, SQLAlchemyError) as exc:
        _err(f"cannot open the library: {exc}")
        return None


def _progress(job: JobRow) -> str:
    return f"{job.progress_done}/{job.progress_total}" if job.progress_total else "-"


def _eta(job: JobRow) -> str:
    return "-" if job.eta_s is None or job.state != JobState.RUNNING else f"{job.eta_s:.0f}s"


def _guarded(command: Callable[[argparse.Namespace, JobQueue], int]) -> Callable[[argparse.Namespace], int]:
    """Open the library for ``command`` and turn an unusable index into a plain message and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        from daemon.jobs.queue import JobQueue

        index = _open(args)
        if index is None:
            return 2
        try:
            with index:
                return command(args, JobQueue(index))
        except JobStoreError as exc:
            _err(str(exc))
            return 2

    run.__doc__ = command.__doc__
    return brief(run)  # every jobs command reads or changes a few rows and ends


@_guarded
def cmd_list(args: argparse.Namespace, queue: JobQueue) -> int:
    jobs = queue.jobs(args.state)
    if args.json:
        _out(json.dumps([j.to_dict() for j in jobs], indent=2))
        return 0
    if not jobs:
        _out("no jobs")
        return 0
    _out(f"{'id':>4} {'kind':13} {'state':9} {'progress':>9} {'eta':>6} {'warn':>4}  {'created (UTC)':19}  step")
    for j in jobs:
        created = j.created_utc.strftime("%Y-%m-%d %H:%M:%S")
        step = j.error if j.state == JobState.FAILED and j.error else (j.step or "")
        _out(f"{j.id:>4} {j.kind:13} {j.state:9} {_progress(j):>9} {_eta(j):>6} {len(j.warnings):>4}  {created}  "
             f"{step[:100]}")
    return 0


@_guarded
def cmd_show(args: argparse.Namespace, queue: JobQueue) -> int:
    job = queue.get_job(args.id)
    if job is None:
        _err(f"no job with id {args.id}")
        return 1
    log_lines = queue.job_log(args.id)
    data = {**job.to_dict(), "log": [{"time_utc": t.isoformat().replace("+00:00", "Z"), "line": line}
                                     for t, line in log_lines]}
    if not args.with_plan and isinstance(data["params"].get("plan"), dict):
        plan = data["params"]["plan"]
        data["params"] = {**data["params"], "plan": {"work": plan.get("work", []),
                                                     "total_frames": plan.get("total_frames")}}
    _out(json.dumps(data, indent=2))
    return 0


@_guarded
def cmd_control(args: argparse.Namespace, queue: JobQueue) -> int:
    command = COMMANDS[args.jobs_command]
    job = queue.get_job(args.id)
    if job is None:
        _err(f"no job with id {args.id}")
        return 1
    fields: dict[str, object] = {"state": command.to_state.value, "step": command.step}
    if command.finishes:
        fields["finished_utc"] = datetime.now(UTC)
    row = queue.transition_job(args.id, command.from_states, **fields)
    if row is None:
        _err(f"cannot {command.name} job {args.id}: it is {job.state}")
        return 1
    queue.append_job_log(args.id, f"{command.name} requested (darkd jobs)")
    note = " (a running daemon stops the current exposure within a second)" if job.state == JobState.RUNNING else ""
    _out(f"job {row.id} ({row.kind}): {job.state} -> {row.state}{note}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    jobs = subparsers.add_parser("jobs", help="the job queue: list, show, cancel, pause, resume")
    jobs.add_argument("--config", type=Path, default=None, help="TOML configuration (default: config/darkd.toml)")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="all jobs, oldest first")
    listing.add_argument("--state", choices=JOB_STATES)
    listing.add_argument("--json", action="store_true", help="JSON list of jobs")
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one job with its warnings and log (JSON)")
    show.add_argument("id", type=int)
    show.add_argument("--with-plan", action="store_true", help="include the whole plan of a build-library job")
    show.set_defaults(func=cmd_show)
    for name, text in (("cancel", "cancel a queued, paused or running job"),
                       ("pause", "pause a queued or running job"), ("resume", "queue a paused job again")):
        command = sub.add_parser(name, help=text)
        command.add_argument("id", type=int)
        command.set_defaults(func=cmd_control)
    for parser in (listing, show, *(sub.choices[n] for n in COMMANDS)):
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
