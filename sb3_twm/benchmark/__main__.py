"""Command-line entry point: ``python -m sb3_twm.benchmark <command> [options]`` (``--help`` lists the commands)."""

import argparse
import sys
from collections.abc import Sequence

from sb3_twm.benchmark import COMMANDS, load_command


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Defaults shown only where they say something: not "None" (the help says what None means) nor False flags.
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """
    :param command: The command whose options to add (its module is imported then); None: only the command list.
    :return: The parser with one sub-command per entry of ``COMMANDS``.
    """
    parser = argparse.ArgumentParser(prog="python -m sb3_twm.benchmark", description="Benchmarks of sb3-twm.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, description) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=description, description=description, formatter_class=_HelpFormatter)
        if name == command:
            module = load_command(name)
            module.add_arguments(subparser)
            subparser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments without the program name (default: ``sys.argv[1:]``).
    :return: The exit status of the command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
