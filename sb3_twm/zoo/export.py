"""
``python -m sb3_twm.zoo export-trial``: a trial of an Optuna study (the best one by default) as a ``twm.yml`` entry
that ``python -m rl_zoo3.train --algo twm --env <id> --conf-file <file>`` reads as it is.

The entry is the configuration the study tuned (the ``--conf-file`` entry of the env, found as rl-zoo3 finds it: the
env id, else ``atari`` for ALE games, else ``default``) with the trial's values on top, nested kwargs merged as
``--trial-id`` merges them, and ``policy_kwargs`` written as a string, as in rl-zoo3's own files.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from sb3_twm.common.atari import is_atari_id
from sb3_twm.zoo.hyperparams_opt import as_kwargs_dict, convert_twm_params

__all__ = ["config_entry", "export_trial", "main", "python_literal"]

# Keys rl-zoo3 removes from a configuration before it becomes TWM's keyword arguments (and the study's user
# attributes): ExperimentManager._preprocess_hyperparams.
_ZOO_ONLY_KEYS = ("n_timesteps", "n_envs", "env_wrapper", "vec_env_wrapper", "frame_stack", "normalize", "callback")
_STUDY_ATTRIBUTES_NOT_HYPERPARAMETERS = ("command",)


def config_entry(config: dict[str, Any], env_id: str) -> tuple[str, dict[str, Any]]:
    """
    The entry of ``env_id`` in a ``twm.yml``-style configuration, as rl-zoo3 picks it.

    :param config: The parsed configuration file.
    :param env_id: The env id.
    :return: The entry's key and the entry.
    """
    if env_id in config:
        key = env_id
    elif "atari" in config and is_atari_id(env_id):
        key = "atari"
    elif "default" in config:
        key = "default"
    else:
        raise ValueError(f"The configuration has no entry for {env_id!r} (nor 'atari'/'default'): keys {sorted(config)}.")
    return key, dict(config[key])


def python_literal(value: Any) -> str:
    """
    ``value`` as the Python source rl-zoo3 evaluates for ``policy_kwargs`` (``dict(net_arch=[64, 64], ...)``).

    :param value: A dict of literals (numbers, strings, lists, dicts, booleans, None).
    :return: The source.
    """
    if isinstance(value, dict):
        for key in value:
            if not (isinstance(key, str) and key.isidentifier()):
                raise ValueError(f"policy_kwargs key {key!r} is not a Python identifier.")
        return "dict(" + ", ".join(f"{key}={python_literal(item)}" for key, item in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        items = ", ".join(python_literal(item) for item in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise ValueError(
        f"policy_kwargs value {value!r} cannot be written as a literal: set it in the configuration file as a string."
    )


def _differences_from_study(study: Any, entry: dict[str, Any]) -> list[str]:
    # rl-zoo3 keeps str() of every tuned hyperparameter as a user attribute of the study (hyperparameters_optimization).
    tuned = {key: value for key, value in study.user_attrs.items() if key not in _STUDY_ATTRIBUTES_NOT_HYPERPARAMETERS}
    if not tuned:
        return []
    configured = {key: value for key, value in entry.items() if key not in _ZOO_ONLY_KEYS}
    if isinstance(configured.get("policy_kwargs"), str):
        configured["policy_kwargs"] = as_kwargs_dict(configured["policy_kwargs"])
    keys = set(tuned) | set(configured)
    return sorted(key for key in keys if key not in tuned or key not in configured or str(configured[key]) != tuned[key])


def export_trial(
    storage: Any, study_name: str, env_id: str, config_file: str | Path, trial_number: int | None = None
) -> tuple[dict[str, Any], str]:
    """
    A trial of a study as a configuration entry.

    :param storage: The study's storage (``--storage`` of the tuning run).
    :param study_name: The study (``--study-name``).
    :param env_id: The env it tuned (the entry's key).
    :param config_file: The ``--conf-file`` it tuned (sb3-twm's ``twm.yml`` if the tuning run had none).
    :param trial_number: The trial; the best completed one if None.
    :return: ``{env_id: entry}`` and a comment saying where it comes from.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ValueError(f"No study {study_name!r} in {storage}: it holds {names}.") from None
    if trial_number is None:
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            raise ValueError(f"Study {study_name!r} has no completed trial yet ({len(study.trials)} trials in all).")
        trial = study.best_trial
    else:
        matching = [trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number]
        if not matching:
            raise ValueError(f"Study {study_name!r} has no trial {trial_number} (it has {len(study.trials)}).")
        trial = matching[0]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise ValueError(f"Trial {trial_number} of {study_name!r} is {trial.state.name}, not COMPLETE.")

    with open(config_file) as file:
        config = yaml.safe_load(file)
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} is not a twm.yml-style configuration (a mapping of env ids to entries).")
    key, entry = config_entry(config, env_id)
    differing = _differences_from_study(study, entry)
    if differing:
        print(
            f"Warning: the study was tuned with other values of {differing} than {config_file}'s entry {key!r} "
            f"holds (its command: {study.user_attrs.get('command', '?')}); the export starts from the entry.",
            file=sys.stderr,
        )
    entry.update(convert_twm_params(trial.params, entry))
    if isinstance(entry.get("policy_kwargs"), dict):
        entry["policy_kwargs"] = python_literal(entry["policy_kwargs"])
    comment = (
        f"Trial {trial.number} of Optuna study {study_name!r} (value {trial.value}), on {config_file}'s entry {key!r}: "
        "python -m sb3_twm.zoo export-trial"
    )
    return {env_id: entry}, comment


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m sb3_twm.zoo export-trial --storage URL --study-name S --env ENV [--conf-file F] [--trial N]
    [--output FILE]``.

    :param argv: The arguments (``sys.argv[1:]`` if None), without ``export-trial``.
    :return: The exit status.
    """
    from sb3_twm.zoo import default_config_path

    parser = argparse.ArgumentParser(
        prog="python -m sb3_twm.zoo export-trial",
        description="Write a trial of an Optuna study (the best one by default) as a twm.yml entry for "
        "python -m rl_zoo3.train --algo twm --conf-file.",
    )
    parser.add_argument("--storage", required=True, help="the study's storage, as given to rl_zoo3.train --storage")
    parser.add_argument("--study-name", required=True, help="the study, as given to rl_zoo3.train --study-name")
    parser.add_argument("--env", required=True, help="the env id the study tuned (the key of the entry)")
    parser.add_argument("--conf-file", default=None, help="the configuration the study tuned (default: sb3-twm's twm.yml)")
    parser.add_argument("--trial", type=int, default=None, help="trial number (default: the best completed trial)")
    parser.add_argument("--output", "-o", default=None, help="file to write (default: print the entry)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    args = parser.parse_args(argv)
    if args.output is not None and Path(args.output).exists() and not args.force:
        parser.error(f"{args.output} exists: choose another file or pass --force to overwrite it")
    config_file = args.conf_file or default_config_path()
    try:
        entry, comment = export_trial(args.storage, args.study_name, args.env, config_file, args.trial)
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"export-trial: {error}", file=sys.stderr)
        return 1
    text = f"# {comment}\n" + yaml.safe_dump(entry, sort_keys=False, default_flow_style=None)
    if args.output is None:
        print(text, end="")
    else:
        Path(args.output).write_text(text)
        print(f"Wrote {args.output}: python -m rl_zoo3.train --algo twm --env {args.env} --conf-file {args.output}")
    return 0
