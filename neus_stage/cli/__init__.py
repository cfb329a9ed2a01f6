"""The ``neus-stage`` command: one thin subcommand per workflow stage, each calling plain package functions.

Every subcommand logs to stderr (the workflow redirects it to the rule's log) and turns a StageError,
or an OSError such as a read-only or full disk, into a one-line message and exit status 2, never a
traceback (``-v`` logs the traceback of an OSError).

A stage setting's default lives in one place, the signature of the package function it feeds: each such
option is added by :func:`_setting` with ``default=argparse.SUPPRESS`` (an option not given is not passed,
so the function's own default applies), ``--help`` shows that default read from the signature
(:class:`_HelpFormatter`; the function's module is imported only when the help is formatted) and each
``_run_*`` passes the options given as keyword arguments (:func:`_given`).

This package module holds that machinery and :func:`main`; the subcommands are in :mod:`.prepare` (frames,
sfm, masks, dataset, visual-hull: from the photos to the dataset and its hull) and :mod:`.reconstruct` (train,
mesh, export, evaluate, and the synth, report, quality and doctor tools).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import StageError
from ..logs import report_error, setup_logging

log = logging.getLogger("neus_stage")


@cache
def _feeds_function(feeds: str) -> Callable:
    """The function (or class) named by ``"module:name"``, e.g. ``"neus_stage.masks:compute_masks"``."""
    module, name = feeds.split(":")
    return getattr(importlib.import_module(module), name)


def _setting(p: argparse.ArgumentParser, feeds: str, *flags: str, **kwargs: Any) -> argparse.Action:
    """Add an optional setting for the parameter ``dest`` of the package function ``feeds`` ("module:name";
    ``dest=`` names the parameter where the flag differs).

    It has no default of its own (an option not given is left out of the namespace, so the function's
    default applies); ``--help`` shows the function's default. Nothing is imported here."""
    action = p.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
    action.feeds = feeds
    if action.nargs != 0 and action.metavar is None:  # named after the flag, not the parameter (--sfm SFM)
        action.metavar = flags[-1].lstrip("-").replace("-", "_").upper()
    return action


def setting_default(action: argparse.Action) -> Any:
    """The default of the function parameter a :func:`_setting` option feeds (``inspect.Parameter.empty``
    where the parameter has none)."""
    param = inspect.signature(_feeds_function(action.feeds)).parameters.get(action.dest)
    return inspect.Parameter.empty if param is None else param.default


class _HelpFormatter(argparse.HelpFormatter):
    """Each setting's help ends with its effective default, read from the signature of the function it feeds;
    a help text that says its default itself (what the function does without it) is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if getattr(action, "feeds", None) is None or "(default:" in text:
            return text
        try:
            default = setting_default(action)
        except ImportError:  # a missing optional dependency: the help without the default
            return text
        if default is inspect.Parameter.empty:
            return text
        shown = f"{action.dest}={default}" if action.nargs == 0 else f"{default}"  # a flag: which value it sets
        return f"{text} (default: {shown.replace('%', '%%')})"


def _command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, formatter_class=_HelpFormatter)


def _given(args: argparse.Namespace, func: Callable) -> dict[str, Any]:
    """The settings given on the command line for ``func``: the namespace's entries named like one of its
    parameters with a default (settings not given are absent from the namespace: ``func``'s defaults apply)."""
    params = inspect.signature(func).parameters
    return {k: v for k, v in vars(args).items() if k in params and params[k].default is not inspect.Parameter.empty}


def build_parser() -> argparse.ArgumentParser:
    """The ``neus-stage`` parser: the global options and one subparser per command."""
    from . import prepare, reconstruct  # they use the settings machinery above

    parser = argparse.ArgumentParser(prog="neus-stage", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the full log to FILE and show only progress, warnings and errors on the terminal "
        "(how the workflow's rules call every command)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (*prepare.COMMANDS, *reconstruct.COMMANDS):
        add(sub)
    return parser


# what to do about the OSErrors a user can fix; the stage is simply run again afterwards (it starts over)
_WHERE = "choose a results folder on a writable disk with room (snakemake -d DIR, or this command's --out)"
_OS_ERROR_FIXES = {
    errno.EACCES: f"no permission to write there: make the folder writable for this user (chmod/chown) or {_WHERE}",
    errno.EPERM: f"no permission to write there: make the folder writable for this user (chmod/chown) or {_WHERE}",
    errno.EROFS: f"the folder is on a read-only file system: {_WHERE}",
    errno.ENOSPC: f"the disk is full: free space there (df -h shows how much is left) or {_WHERE}",
    errno.EDQUOT: f"your disk quota is used up: free space (quota -s shows it) or {_WHERE}",
}
# the arguments naming what a command writes: where an error without a file name (a full disk) happened
_OUTPUT_ARGS = {"visual-hull": ("bbox", "hull")}
_DEFAULT_OUTPUT_ARGS = ("out", "clean_path", "error_cloud")


def os_error_message(exc: OSError, args: argparse.Namespace | None = None) -> str:
    """One line for an OSError: the path (the error's own, else the command's outputs), the cause, the fix."""
    path = exc.filename
    if path is None and args is not None:
        names = _OUTPUT_ARGS.get(getattr(args, "command", None), _DEFAULT_OUTPUT_ARGS)
        path = ", ".join(str(getattr(args, name)) for name in names if getattr(args, name, None) is not None) or None
    cause = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_ERROR_FIXES.get(exc.errno, "check this path and its disk, then run the command again")
    where = f"{path}: " if path is not None else "writing the results: "
    return " ".join(f"{where}{cause}; {fix}".split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (0, 2 for an error the user can fix, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log)
    status = 2
    try:
        args.func(args)
    except StageError as exc:
        message = str(exc)
    except OSError as exc:  # a read-only or full disk, a folder without write permission: no traceback
        log.debug("traceback of the error below", exc_info=True)
        message = os_error_message(exc, args)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; the stage starts over when run again
        log.debug("traceback of the interruption", exc_info=True)
        message = "interrupted (Ctrl-C); this stage's outputs are incomplete: run the same command again to redo it"
        status = 130
    else:
        return 0
    report_error(f"neus-stage {args.command}: error: {message}")
    return status
