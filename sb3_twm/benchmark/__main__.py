"""Command-line entry point: ``python -m sb3_twm.benchmark <command> [options]`` (``--help`` lists the commands)."""

import argparse
import sys
from collections.abc import Sequence

from sb3_twm.benchmark import COMMANDS, load_command


def build_parser() -> argparse.ArgumentParser:
    """
    :return: The parser with one sub-command per entry of ``COMMANDS``.
    """
    parser = argparse.ArgumentParser(prog="python -m sb3_twm.benchmark", description="Benchmarks of sb3-twm.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = load_command(name)
        description = getattr(module, "DESCRIPTION", None) or (module.__doc__ or "").strip()
        subparser = subparsers.add_parser(
            name,
            help=description.splitlines()[0] if description else None,
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments without the program name (default: ``sys.argv[1:]``).
    :return: The exit status of the command.
    """
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
