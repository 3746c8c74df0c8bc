"""
rl-zoo3 integration of TWM: ``--algo twm`` for ``python -m rl_zoo3.train|enjoy|record_video``.

rl-zoo3 has no plugin hook for algorithms. sb3-twm ships a start-up hook (``_sb3_twm_zoo.pth`` and the stdlib-only
module ``_sb3_twm_zoo``) that calls the ``register_*``/``patch_*`` functions below right after rl-zoo3 imports the
module they patch; ``SB3_TWM_NO_ZOO_HOOK=1`` turns it off. ``python -m sb3_twm.zoo train|enjoy|record_video ...``
(same arguments as the zoo's scripts) registers explicitly and needs no hook; ``python -m sb3_twm.zoo export-trial``
writes a trial of an Optuna study as a ``twm.yml`` entry (:mod:`sb3_twm.zoo.export`).

Tuning with many workers (``-optimize --storage <database URL> --study-name S`` on each machine): the storage gets
heartbeats, so that the trial of a killed worker is marked FAIL and queued again (:mod:`sb3_twm.zoo.optuna_storage`).

Exact resume through the zoo (see :func:`patch_experiment_manager`): every ``--save-freq`` checkpoint of ``--algo twm``
is a model + dataset pair (``rl_model_<N>_steps.zip`` and ``rl_model_replay_buffer_<N>_steps.pkl``, an ``.npz``
whatever the name), plus ``rl_model_vecnormalize_<N>_steps.pkl`` when the env is normalised, and ``-i`` loads the
model with the dataset and the statistics that belong to it and continues its step counter::

    python -m rl_zoo3.train --algo twm --env PongNoFrameskip-v4 --seed 0 --save-freq 10000
    python -m rl_zoo3.train --algo twm --env PongNoFrameskip-v4 --seed 0 \
        -i logs/twm/PongNoFrameskip-v4_1/rl_model_50000_steps.zip -n 50000

``-n`` is then the number of *further* steps (the resumed run ends at step 100000). ``-i`` on a final model
(``<run>/<env id>.zip``) loads ``<run>/replay_buffer.pkl``, which ``--save-replay-buffer`` writes at the end.

Nothing here imports rl-zoo3 at module level: the hook runs while ``rl_zoo3/__init__`` is still being imported.
"""

from pathlib import Path
from types import ModuleType

from sb3_twm.twm.twm import TWM
from sb3_twm.zoo import experiment_manager
from sb3_twm.zoo.experiment_manager import ALGO_NAME
from sb3_twm.zoo.hyperparams_opt import convert_twm_params, sample_twm_params

__all__ = [
    "ALGO_NAME",
    "COMMANDS",
    "EXPORT_COMMAND",
    "convert_twm_params",
    "default_config_path",
    "hyperparams_dir",
    "main",
    "patch_experiment_manager",
    "register_algo",
    "register_all",
    "register_sampler",
    "sample_twm_params",
]

COMMANDS = ("train", "enjoy", "record_video")
EXPORT_COMMAND = "export-trial"


def hyperparams_dir() -> Path:
    """
    The folder holding ``twm.yml``: ``sb3_twm/hyperparams`` inside an installed wheel, else the repository's top-level
    ``hyperparams`` (source checkouts and editable installs, where ``sb3_twm`` is the source folder).
    """
    package_dir = Path(__file__).resolve().parent.parent
    packaged = package_dir / "hyperparams"
    return packaged if packaged.is_dir() else package_dir.parent / "hyperparams"


def default_config_path() -> Path:
    """:return: The ``twm.yml`` that ``--algo twm`` reads when no ``--conf-file`` is given."""
    return hyperparams_dir() / f"{ALGO_NAME}.yml"


def register_algo(utils_module: ModuleType) -> None:
    """Add ``twm`` to ``rl_zoo3.utils.ALGOS`` (the dict every zoo script reads); an existing entry wins."""
    utils_module.ALGOS.setdefault(ALGO_NAME, TWM)


def register_sampler(hyperparams_opt_module: ModuleType) -> None:
    """Add TWM's Optuna sampler and converter to ``rl_zoo3.hyperparams_opt``; existing entries win."""
    hyperparams_opt_module.HYPERPARAMS_SAMPLER.setdefault(ALGO_NAME, sample_twm_params)
    hyperparams_opt_module.HYPERPARAMS_CONVERTER.setdefault(ALGO_NAME, convert_twm_params)


def _zoo_default_configs(exp_manager_module: ModuleType) -> set[Path]:
    # rl-zoo3 looks for hyperparams/<algo>.yml next to its package, or one level up (exp_manager.py __init__).
    zoo_dir = Path(exp_manager_module.__file__).resolve().parent
    return {zoo_dir / "hyperparams" / f"{ALGO_NAME}.yml", zoo_dir.parent / "hyperparams" / f"{ALGO_NAME}.yml"}


def patch_experiment_manager(exp_manager_module: ModuleType) -> None:
    """
    Adapt ``rl_zoo3.exp_manager.ExperimentManager`` for ``algo == "twm"`` (other algorithms are untouched; the
    replacements are in :mod:`sb3_twm.zoo.experiment_manager`):

    - without ``--conf-file``, read sb3-twm's ``twm.yml`` (rl-zoo3 itself has none; if it ever ships one, it wins);
    - ``-optimize``: give the sampler the configuration being tuned, so that the search is anchored at it, and record
      the worker (``host:pid``) of each trial as its user attribute ``worker``;
    - ``-optimize --storage <database URL>``: an ``RDBStorage`` with heartbeats and retries of failed trials
      (:mod:`sb3_twm.zoo.optuna_storage`), so that a killed worker's trial does not stay RUNNING;
    - ``--trial-id``: merge the trial's nested kwargs into the configured ones (yml, trial, then ``-params``);
    - ``--save-freq``: the checkpoints hold the dataset and the ``VecNormalize`` statistics too
      (``CheckpointCallback(save_replay_buffer=True, save_vecnormalize=True)``), as a TWM checkpoint cannot resume
      without its dataset, nor a normalised run without the statistics of that step;
    - ``-i <checkpoint>``: the envs are normalised with the checkpoint's own statistics
      (``<prefix>_vecnormalize_<N>_steps.pkl``) when it has them, instead of rl-zoo3's ``<run>/<env id>/vecnormalize.pkl``
      (which a killed run never wrote, and which holds the statistics of the run's end, not of the checkpoint);
    - ``-i <model.zip>``: load the model with its own hyperparameters (its policy and ``policy_kwargs`` always; every
      other one unless ``-params`` sets it on this command line: the configuration's entry is not applied to a
      resumed run, and differing values are named), the dataset that belongs to it
      (:func:`~sb3_twm.common.checkpoints.dataset_path_for_checkpoint`: ``<prefix>_replay_buffer_<N>_steps.pkl`` for a
      checkpoint ``<prefix>_<N>_steps.zip``, else ``replay_buffer.pkl`` next to the model; a trained model without one
      warns), then continue the run: ``learn(n_timesteps, reset_num_timesteps=False)``, so ``-n`` counts further steps.
    """
    cls = exp_manager_module.ExperimentManager
    if getattr(cls, "_sb3_twm_patched", False):
        return
    experiment_manager.patch(cls, exp_manager_module, default_config_path(), _zoo_default_configs(exp_manager_module))


def register_all() -> None:
    """Register TWM with rl-zoo3 explicitly (what the start-up hook does lazily); safe to call more than once."""
    from rl_zoo3 import exp_manager, hyperparams_opt, utils

    register_algo(utils)
    register_sampler(hyperparams_opt)
    patch_experiment_manager(exp_manager)


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m sb3_twm.zoo train|enjoy|record_video [zoo arguments]``: run ``rl_zoo3.<command>`` with TWM registered,
    hook or no hook (e.g. with ``SB3_TWM_NO_ZOO_HOOK=1``, ``python -S`` or a ``PYTHONPATH`` install).
    ``python -m sb3_twm.zoo export-trial ...``: see :mod:`sb3_twm.zoo.export`.
    """
    import runpy
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == EXPORT_COMMAND:
        from sb3_twm.zoo import export

        return export.main(argv[1:])
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m sb3_twm.zoo {{{','.join(COMMANDS)}}} [arguments of python -m rl_zoo3.<command>]\n"
            f"       python -m sb3_twm.zoo {EXPORT_COMMAND} --storage URL --study-name S --env ENV [--output FILE]\n"
            "example: python -m sb3_twm.zoo train --algo twm --env PongNoFrameskip-v4",
            file=sys.stderr,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    register_all()
    command = argv[0]
    sys.argv = [f"rl_zoo3.{command}", *argv[1:]]
    runpy.run_module(f"rl_zoo3.{command}", run_name="__main__", alter_sys=True)
    return 0
