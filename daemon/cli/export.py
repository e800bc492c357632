"""``darkd library export-phd2``: write a camera's darks as PHD2's dark library (``calib/export_phd2.py``).

Which masters: the ``ready`` darks of ``--camera`` that a light with their own key could use now (the one usable-master
rule: valid, not held for review, file intact), narrowed by ``--gain``/``--offset``/``--binning``/``--set-point``.
PHD2 keeps one set of darks per profile, all of one frame size, so the chosen masters must share every key attribute
but the exposure; when they do not, the command lists the groups and asks for a narrower choice.

Exit codes: 0 written; 1 no usable dark; 2 bad input (ambiguous choice, bad arguments, unreadable configuration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cli import subcommands_of

if TYPE_CHECKING:  # imported by the command when it runs (start-up time of every darkd command)
    from daemon.library.catalog import LibraryIndex
    from daemon.library.store import EntryView


class ExportError(Exception):
    """An error already phrased for the user; ends the command with exit code 2."""


def _err(text: str) -> None:
    sys.stderr.write(f"darkd: {text}\n")


def phd2_darks(index: LibraryIndex, camera: str, *, gain: int | None = None, offset: int | None = None,
               binning: int | None = None, set_point_c: float | None = None) -> tuple[list[EntryView], list[str]]:
    """The darks to export (increasing exposure) and the reasons the other candidates were left out.

    Raises :class:`ExportError` when the usable darks differ in more than the exposure (several groups)."""
    candidates = index.entries(camera=camera, kind="dark", status="ready", gain=gain, offset=offset, binning=binning,
                               set_point_c=set_point_c)
    usable: list[EntryView] = []
    skipped: list[str] = []
    for entry in candidates:
        why = index.usable_refusal(entry)
        if why is None:
            usable.append(entry)
        else:
            skipped.append(f"entry {entry.id} ({entry.key.describe()}): {why}")
    groups: dict[tuple[object, ...], list[EntryView]] = {}
    for entry in usable:
        rest = tuple(v for k, v in entry.key.to_dict().items() if k != "exposure_s")
        groups.setdefault(rest, []).append(entry)
    if len(groups) > 1:
        lines = [f"  - {g[0].key.describe().split(' at ', 1)[1]}: {len(g)} dark(s)" for g in groups.values()]
        raise ExportError("the usable darks of this camera differ in more than the exposure; PHD2 keeps one set per "
                          "profile. Choose one with --gain/--offset/--binning/--set-point:\n" + "\n".join(lines))
    chosen = next(iter(groups.values()), [])
    return sorted(chosen, key=lambda e: e.exposure_s), skipped


def default_note(entry: EntryView) -> str:
    """``darkd <camera> g<gain> o<offset> bin<b> <set point>C``, cut to PHD2's 65 characters."""
    from calib.export_phd2 import MAX_NOTE_CHARS

    text = f"darkd {entry.camera} g{entry.gain} o{entry.offset} bin{entry.binning} {entry.set_point_c:g}C"
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)[:MAX_NOTE_CHARS]


def cmd_export_phd2(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from calib.export_phd2 import Phd2Dark, dark_library_filename, write_dark_library
    from calib.frames import FrameError, read_frame
    from daemon.library.catalog import LibraryIndex
    from daemon.settings import load_settings

    try:
        settings = load_settings(args.config)
        target = Path(args.out) / dark_library_filename(args.profile, args.instance)
        try:
            index = LibraryIndex.open(settings.library)
        except (OSError, SQLAlchemyError) as exc:
            raise ExportError(f"cannot open the library at {settings.library.root}: {exc}") from exc
        with index:
            entries, skipped = phd2_darks(index, args.camera, gain=args.gain, offset=args.offset,
                                          binning=args.binning, set_point_c=args.set_point)
        for line in skipped:
            _err(f"left out {line}")
        if not entries:
            _err(f"no usable dark of camera {args.camera!r} matches; see 'darkd library --camera ... --kind dark'")
            return 1
        darks = [Phd2Dark(read_frame(e.master).data, e.exposure_s, binning=e.binning, gain=e.gain, source=e.master)
                 for e in entries if e.master is not None]
        note = args.note if args.note is not None else default_note(entries[0])
        write_dark_library(target, darks, note=note)
    except ExportError as exc:
        _err(str(exc))
        return 2
    except (FileNotFoundError, ValidationError) as exc:
        _err(f"configuration: {exc}")
        return 2
    except (ValueError, FrameError, OSError) as exc:
        _err(f"cannot write the PHD2 dark library: {exc}")
        return 2
    sys.stdout.write(f"wrote {target}: {len(darks)} dark(s), {entries[0].width_px}x{entries[0].height_px} px, "
                     f"exposures {', '.join(f'{e.exposure_s:g}' for e in entries)} s\n")
    return 0



def register(subparsers: argparse._SubParsersAction) -> None:
    export = subcommands_of(subparsers, "library").add_parser(
        "export-phd2", help="write a camera's darks as PHD2's dark library (PHD2_dark_lib_<profile>.fit)")
    export.add_argument("--camera", required=True, help="camera name as in the library (e.g. the guide camera's)")
    export.add_argument("--profile", type=int, required=True, metavar="N", help="PHD2 profile id (file name suffix)")
    export.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to write to: PHD2's darks_defects folder (e.g. ~/.phd2/darks_defects)")
    export.add_argument("--instance", type=int, default=1, metavar="K", help="PHD2 instance number (default 1)")
    export.add_argument("--gain", type=int)
    export.add_argument("--offset", type=int)
    export.add_argument("--binning", type=int)
    export.add_argument("--set-point", type=float, metavar="C", help="set point within the configured tolerance")
    export.add_argument("--note", default=None, help="USERNOTE in every HDU (≤ 65 characters; default: the key)")
    export.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="TOML configuration (default: config/darkd.toml)")
    export.set_defaults(func=cmd_export_phd2)
