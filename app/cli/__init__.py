"""The ``xnet`` command: the parser and the dispatch. Each subcommand is a module of this package
(``HELP``, ``add_arguments(parser)``, ``run(args) -> int``) that imports what it needs lazily, so
``xnet segment`` never loads Qt; ``_common`` holds what they share. Bad input: exit status 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from app.cli import average, compare, evaluate, explain, pacs, report, segment, synth, train
from app.cli._common import EXIT_BAD_INPUT, error_line
from xnet_core import DISCLAIMER, __version__

COMMANDS = {"segment": segment, "explain": explain, "compare": compare, "report": report, "synth": synth,
            "evaluate": evaluate, "train": train, "average": average, "pacs": pacs}

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnet", description=f"X-Net stroke-lesion segmentation. {DISCLAIMER}"
    )
    parser.add_argument("--version", action="version", version=f"xnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = commands.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="xnet: %(levelname)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    from xnet_core.errors import XNetError

    try:
        return handler(args)
    except XNetError as exc:
        print(f"xnet {args.command}: error: {error_line(exc, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"xnet {args.command}: interrupted", file=sys.stderr)
        return 130
