"""
Where a trained model is, for the command-line tools (``sb3_twm.evaluate``, ``sb3_twm.dream``): a model file given with
``--model``, or a zoo run found as ``rl_zoo3.enjoy`` finds it (``--folder logs/ --algo twm --env ID --exp-id N``).
"""

import argparse
import pathlib

__all__ = ["add_model_arguments", "model_parser", "model_path"]


def model_parser(prog: str, description: str, env_help: str) -> argparse.ArgumentParser:
    """
    :param prog: The tool's command (``python -m sb3_twm.<tool>``).
    :param description: Its help text (the module docstring, shown as written).
    :param env_help: The help of its ``--env``.
    :return: A parser with ``--env`` and the arguments of :func:`add_model_arguments`, for the tool to extend.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help=env_help)
    add_model_arguments(parser)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Add ``--model`` or ``--folder``/``--algo``/``--exp-id``/``--load-best`` to ``parser`` (``--env`` is the tool's own).

    :param parser: The tool's parser.
    """
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--model", help="a model saved by TWM.save (.zip), instead of a zoo run")
    where.add_argument("--folder", "-f", type=pathlib.Path, default=pathlib.Path("logs"), help="zoo log folder")
    parser.add_argument("--algo", default="twm", help="zoo algorithm folder")
    parser.add_argument("--exp-id", type=int, default=0, help="zoo experiment id (0: the latest)")
    parser.add_argument("--load-best", action="store_true", help="the zoo run's best_model.zip instead of the final one")


def model_path(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[pathlib.Path, str]:
    """
    :param args: The parsed arguments (``add_model_arguments`` and ``--env``).
    :param parser: The parser, for errors.
    :return: The model file, and the run's name (the zoo run folder, or the model file's stem).
    """
    if args.model is not None:
        path, run = pathlib.Path(args.model), pathlib.Path(args.model).stem
    else:
        from huggingface_sb3 import EnvironmentName
        from rl_zoo3.utils import get_model_path

        try:
            _, found, log_path = get_model_path(
                args.exp_id, str(args.folder), args.algo, EnvironmentName(args.env), load_best=args.load_best
            )
        except (AssertionError, ValueError) as error:
            parser.error(f"no trained model found: {error}")
        path, run = pathlib.Path(found), pathlib.Path(log_path).name
    if not path.is_file():
        parser.error(f"{path} is not a file")
    return path, run
