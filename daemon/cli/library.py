"""``darkd plan``, ``darkd library`` (list, show, verify, accept, bad).

Exit codes: 0 success; 1 problems found (verify) or entry not found; 2 bad input (unreadable lights/keys, bad
arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.cli import LazyChoices, brief

if TYPE_CHECKING:  # the library stack is imported by the command that runs (start-up time of every darkd command)
    from daemon.library.catalog import LibraryIndex
    from daemon.library.store import EntryView
    from daemon.settings import Settings


def key_columns() -> dict[str, str]:
    """The key fields listed by ``darkd library`` (those with a ``column`` in their spec), header → field name."""
    from daemon.library.keys import KEY_SPECS

    return {spec.column: name for name, spec in KEY_SPECS.items() if spec.column is not None}


def _out(text: str) -> None:
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))


def _err(text: str) -> None:
    sys.stderr.write(f"darkd: {text}\n")


def _settings(args: argparse.Namespace) -> Settings:
    from daemon.settings import load_settings

    return load_settings(args.config)


class CliError(Exception):
    """An error already phrased for the user; ends the command with exit code 2."""


def _open(settings: Settings) -> LibraryIndex:
    from sqlalchemy.exc import SQLAlchemyError

    from daemon.library.catalog import LibraryIndex

    try:
        return LibraryIndex.open(settings.library)
    except (OSError, SQLAlchemyError) as exc:
        raise CliError(f"cannot open the library at {settings.library.root} "
                       f"({settings.library.resolved_database_url()}): {exc}") from exc


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        try:
            return func(args)
        except CliError as exc:
            _err(str(exc))
            return 2
        except (FileNotFoundError, ValidationError) as exc:  # --config missing or invalid
            _err(f"configuration: {exc}")
            return 2

    run.__name__ = func.__name__
    run.__doc__ = func.__doc__
    return run


def _index_exists(settings: Settings) -> bool:
    if settings.library.database_url:
        return True
    return (Path(settings.library.root) / "index.sqlite3").is_file()


def _parse_defaults(items: list[str]) -> dict[str, Any]:
    from daemon.planning import PlanError

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PlanError(f"--default expects NAME=VALUE, got {item!r}")
        out[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return out


def _profile_defaults(settings: Settings) -> tuple[float, float]:
    """(max cooling delta °C, readout s) from the configured camera profile, else the documented defaults."""
    from daemon.planning import DEFAULT_MAX_COOLING_DELTA_C, DEFAULT_READOUT_S

    try:
        from drivers.profiles import load_profile

        profile = load_profile(settings.camera_profile)
    except Exception:  # a missing/broken profile only costs the camera-specific defaults
        return DEFAULT_MAX_COOLING_DELTA_C, DEFAULT_READOUT_S
    delta = profile.max_cooling_delta_c if profile.max_cooling_delta_c is not None else DEFAULT_MAX_COOLING_DELTA_C
    return delta, profile.readout_s


def cmd_plan(args: argparse.Namespace) -> int:
    from daemon.library.ageing import refresh_ageing
    from daemon.planning import PlanError, load_keys_file, plan_from_keys, plan_from_lights

    settings = _settings(args)
    delta_c, readout_s = _profile_defaults(settings)
    index = _open(settings)
    try:
        refresh_ageing(index)
        common = {"ambient_c": args.ambient,
                  "max_cooling_delta_c": delta_c if args.max_cooling_delta is None else args.max_cooling_delta,
                  "readout_s": readout_s if args.readout_s is None else args.readout_s}
        if args.lights:
            plan = plan_from_lights(args.lights, index, settings, camera=args.camera,
                                    overrides=_parse_defaults(args.default), include_bias=not args.no_bias, **common)
        else:
            plan = plan_from_keys(load_keys_file(args.keys), index, settings, **common)
    except PlanError as exc:
        _err(str(exc))
        return 2
    finally:
        index.close()
    _out(json.dumps(plan.to_dict(), indent=2) if args.json else plan.to_text())
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"kind": args.kind, "status": args.status, "camera": args.camera, "exposure_s": args.exposure,
            "set_point_c": args.temperature, "gain": args.gain}


def cmd_list(args: argparse.Namespace) -> int:
    from daemon.library.ageing import refresh_ageing

    settings = _settings(args)
    entries = []
    if _index_exists(settings):
        with _open(settings) as index:
            refresh_ageing(index)
            entries = index.entries(**_filters(args))
    if args.json:
        _out(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        _out(f"library {settings.library.root}: no entries")
        return 0
    _out(_table(entries))
    return 0


def _cell(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name == "exposure_s":
        return f"{value:g}s"
    if name == "set_point_c":
        return f"{value:g}°C"
    return str(value)


def _table(entries: list[EntryView]) -> str:
    """``darkd library``: id, status, the key columns (:func:`key_columns`), frames, master; aligned."""
    columns = key_columns()
    headers = ["id", "status", *columns, "frames", "master"]
    rows = [[str(e.id), e.status, *(_cell(name, getattr(e, name)) for name in columns.values()),
             f"{e.frames}/{e.frames_target}", (e.master or "-") + (" (review)" if e.review else "")] for e in entries]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=False)) + "  " + line[-1]
                     for line in lines)


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _open(settings) as index:
        entry = index.get(args.id)
        if entry is None:
            _err(f"no library entry with id {args.id}")
            return 1
        frames = index.frames_of(args.id)
    data = {**entry.to_dict(), "frame_files": [f.to_dict() for f in frames]}
    _out(json.dumps(data, indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from daemon.library.verify import remove_partial_files, verify_library

    settings = _settings(args)
    with _open(settings) as index:
        if args.remove_partial:
            for path in remove_partial_files(index.layout.root):
                sys.stderr.write(f"removed partial file {path}\n")
        try:
            report = verify_library(index, checksums=not args.no_checksums, strict=args.strict)
        except SQLAlchemyError as exc:  # a malformed or unreadable index: say so, no traceback
            raise CliError(f"the library index at {settings.library.resolved_database_url()} cannot be read: "
                           f"{getattr(exc, 'orig', None) or exc}") from exc
    _out(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def cmd_accept(args: argparse.Namespace) -> int:
    from daemon.library.store import EntryNotFound

    settings = _settings(args)
    with _open(settings) as index:
        try:
            entry = index.accept_review(args.id)
        except EntryNotFound as exc:
            _err(str(exc))
            return 1
    _out(f"entry {entry.id} accepted: {entry.key.describe()}")
    return 0


def cmd_bad(args: argparse.Namespace) -> int:
    from daemon.library.store import EntryNotFound

    settings = _settings(args)
    with _open(settings) as index:
        try:
            entry = index.mark_bad(args.id, args.reason)
        except EntryNotFound as exc:
            _err(str(exc))
            return 1
    _out(f"entry {entry.id} marked bad: {args.reason}")
    return 0


def _config(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # nested sub-commands must not overwrite a --config given before them (``darkd library --config X verify``)
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS if nested else None,
                        help="TOML configuration (default: config/darkd.toml)")


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser("plan", help="plan the darks and biases that lights (or a key list) need")
    source = plan.add_mutually_exclusive_group(required=True)
    source.add_argument("--lights", type=Path, help="folder of light frames (FITS headers are read, not pixels)")
    source.add_argument("--keys", type=Path, help="TOML/JSON list of library keys")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--ambient", type=float, default=None, metavar="C",
                      help="ambient temperature (°C) to check which set points are reachable")
    plan.add_argument("--max-cooling-delta", type=float, default=None, metavar="C",
                      help="how far below ambient the cooler can go (°C; default: the camera profile's, else 38)")
    plan.add_argument("--readout-s", type=float, default=None,
                      help="readout time per frame for the estimate (s; default: the camera profile's, else 2)")
    plan.add_argument("--camera", default=None, help="camera name for the keys (default: the lights' INSTRUME)")
    plan.add_argument("--default", action="append", default=[], metavar="NAME=VALUE",
                      help="value for a key attribute the lights' headers lack (read_mode, usb_traffic, amp_glow, "
                           "overscan, bit_depth, gain, offset, binning, camera); it comes before the config's "
                           "[lights.\"<camera>\"] table in the rule of daemon/light_rule.py; repeatable")
    plan.add_argument("--no-bias", action="store_true", help="plan darks only")
    _config(plan)
    plan.set_defaults(func=_guard(cmd_plan))

    lib = subparsers.add_parser("library", help="list the library; 'verify', 'show', 'accept', 'bad'")
    lib.add_argument("--json", action="store_true", help="print a JSON list of entries")
    # no help text: argparse lists the choices while expanding one, which would load the library stack for --help
    lib.add_argument("--kind", choices=LazyChoices("daemon.library.keys", "KINDS"), metavar="KIND")
    lib.add_argument("--status", choices=LazyChoices("daemon.library.store", "STATUSES"), metavar="STATUS")
    lib.add_argument("--camera")
    lib.add_argument("--exposure", type=float, metavar="S")
    lib.add_argument("--temperature", type=float, metavar="C", help="set point within the configured tolerance")
    lib.add_argument("--gain", type=int)
    _config(lib)
    lib.set_defaults(func=brief(_guard(cmd_list)))
    sub = lib.add_subparsers(dest="library_command", required=False, metavar="ACTION")
    verify = sub.add_parser("verify", help="check index against files: checksums, counts, headers, orphans, partials")
    verify.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    verify.add_argument("--no-checksums", action="store_true", help="skip SHA-256 (sizes still compared)")
    verify.add_argument("--strict", action="store_true",
                        help="also report unrecorded frames of in-progress entries as orphans")
    verify.add_argument("--remove-partial", action="store_true",
                        help="first delete leftovers of interrupted writes (only while the daemon is stopped)")
    _config(verify, nested=True)
    verify.set_defaults(func=_guard(cmd_verify))
    show = sub.add_parser("show", help="one entry with its frames (JSON)")
    show.add_argument("id", type=int)
    _config(show, nested=True)
    show.set_defaults(func=brief(_guard(cmd_show)))
    accept = sub.add_parser("accept", help="accept a master held for review")
    accept.add_argument("id", type=int)
    _config(accept, nested=True)
    accept.set_defaults(func=brief(_guard(cmd_accept)))
    bad = sub.add_parser("bad", help="mark an entry bad (never selected again)")
    bad.add_argument("id", type=int)
    bad.add_argument("--reason", required=True)
    _config(bad, nested=True)
    bad.set_defaults(func=brief(_guard(cmd_bad)))
