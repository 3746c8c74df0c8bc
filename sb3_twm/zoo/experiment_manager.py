"""
What ``--algo twm`` changes in rl-zoo3's ``ExperimentManager`` (see :func:`sb3_twm.zoo.patch_experiment_manager`).

Each function below replaces one method for TWM's experiments only: it receives the manager, the original method
and the method's arguments; other algorithms get the original method.
"""

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from pprint import pprint
from types import ModuleType
from typing import Any

from sb3_twm.common.checkpoints import dataset_path_for_checkpoint, vecnormalize_path_for_checkpoint
from sb3_twm.zoo.hyperparams_opt import BASE_HYPERPARAMS, convert_twm_params
from sb3_twm.zoo.optuna_storage import WORKER_ATTRIBUTE, is_database_url, studies_with_heartbeats, worker_name

ALGO_NAME = "twm"


def patch(cls: type, module: ModuleType, default_config: Path, zoo_defaults: set[Path]) -> None:
    """
    Patch ``cls`` (rl-zoo3's ``ExperimentManager``) in place.

    :param cls: The class.
    :param module: ``rl_zoo3.exp_manager`` (its ``ALGOS``, ``VecNormalize`` and ``CheckpointCallback``).
    :param default_config: sb3-twm's ``twm.yml``.
    :param zoo_defaults: Where rl-zoo3 looks for ``twm.yml`` by default.
    """
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        config = Path(self.config)
        if self.algo == ALGO_NAME and config.resolve() in zoo_defaults and not config.is_file():
            self.config = str(default_config)

    cls.__init__ = __init__
    replacements = {
        "hyperparameters_optimization": functools.partial(_hyperparameters_optimization, optuna_module=module.optuna),
        "objective": _objective,
        "read_hyperparameters": _read_hyperparameters,
        "create_callbacks": functools.partial(_create_callbacks, checkpoint_class=module.CheckpointCallback),
        "_maybe_normalize": functools.partial(_maybe_normalize, vec_normalize_class=module.VecNormalize),
        "_load_pretrained_agent": functools.partial(_load_pretrained_agent, module=module),
        "learn": _learn,
    }
    for name, replacement in replacements.items():
        setattr(cls, name, _for_twm_only(getattr(cls, name), replacement))
    cls._sb3_twm_patched = True


def _for_twm_only(original: Callable[..., Any], replacement: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.algo != ALGO_NAME:
            return original(self, *args, **kwargs)
        return replacement(self, original, *args, **kwargs)

    return method


def _hyperparameters_optimization(self: Any, original: Callable[..., None], optuna_module: ModuleType) -> None:
    # --storage <database URL>: heartbeats, so that a killed worker's trial is marked FAIL (and retried).
    if not is_database_url(self.storage):
        return original(self)
    with studies_with_heartbeats(optuna_module, self.storage) as storage:
        if storage is not self.storage and self.verbose > 0:
            print(
                f"Optuna storage with heartbeats every {storage.heartbeat_interval} s: a trial without one for "
                f"{storage.grace_period} s is marked FAIL (sb3_twm.zoo.optuna_storage)"
            )
        return original(self)


def _objective(self: Any, original: Callable[..., float], trial: Any) -> float:
    # -optimize: which worker runs the trial (for the study and its dashboard), and the sampler searches around the
    # configuration being tuned.
    trial.set_user_attr(WORKER_ATTRIBUTE, worker_name())
    token = BASE_HYPERPARAMS.set(self._hyperparams)
    try:
        return original(self, trial)
    finally:
        BASE_HYPERPARAMS.reset(token)


def _read_hyperparameters(self: Any, original: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if not (self.storage and self.study_name and self.trial_id):
        return original(self)
    # --trial-id: the configuration (yml + -params) without the trial, then the trial on top of it, merging nested
    # kwargs, and -params last, as the zoo orders them.
    trial_id, self.trial_id = self.trial_id, None
    try:
        hyperparams, _ = original(self)
    finally:
        self.trial_id = trial_id
    params = self.load_trial(self.storage, self.study_name, trial_id, convert=False)
    trial_hyperparams = convert_twm_params(params, hyperparams)
    print(f"Hyperparameters of trial {trial_id} of Optuna study {self.study_name!r} (nested kwargs merged):")
    pprint(trial_hyperparams)
    hyperparams.update(trial_hyperparams)
    hyperparams.update(self.custom_hyperparams or {})
    return hyperparams, OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams))


def _create_callbacks(self: Any, original: Callable[..., None], checkpoint_class: type) -> None:
    original(self)
    for callback in self.callbacks:
        if isinstance(callback, checkpoint_class):
            # A TWM checkpoint cannot resume without its dataset, nor a normalised run without its statistics.
            callback.save_replay_buffer = True
            callback.save_vecnormalize = True


def _maybe_normalize(self: Any, original: Callable[..., Any], env: Any, eval_env: bool, vec_normalize_class: type) -> Any:
    statistics = vecnormalize_path_for_checkpoint(self.trained_agent) if self.trained_agent else None
    if statistics is None:
        return original(self, env, eval_env)
    print(f"Loading VecNormalize statistics {statistics}")
    env = vec_normalize_class.load(str(statistics), env)
    if eval_env:
        # As rl-zoo3 does for evaluation envs: frozen statistics, raw rewards.
        env.training = False
        env.norm_reward = False
    return env


def _load_pretrained_agent(
    self: Any, original: Callable[..., Any], hyperparams: dict[str, Any], env: Any, module: ModuleType
) -> Any:
    print("Loading pretrained agent")
    # The policy and its kwargs are saved in the model and cannot change (the zoo drops them too). The run goes on
    # with the checkpoint's own hyperparameters: only what -params sets on this command line changes them (the
    # configuration file's entry may differ from what the run was started with, e.g. by -params then).
    fixed = {"policy", "policy_kwargs"}
    explicit = set(self.custom_hyperparams or {}) - fixed
    overrides = {key: value for key, value in hyperparams.items() if key in explicit}
    model = module.ALGOS[self.algo].load(
        self.trained_agent,
        env=env,
        seed=self.seed,
        tensorboard_log=self.tensorboard_log,
        verbose=self.verbose,
        device=self.device,
        **overrides,
    )
    kept = {key: value for key, value in hyperparams.items() if key not in explicit | fixed and not callable(value)}
    differing = sorted(key for key, value in kept.items() if hasattr(model, key) and getattr(model, key) != value)
    if differing:
        print(f"The checkpoint's values of {differing} are kept (the configuration's differ): pass -params key:value "
              "to change one.")  # fmt: skip
    dataset_path = dataset_path_for_checkpoint(self.trained_agent)
    if dataset_path is not None:
        print(f"Loading replay buffer {dataset_path}")
        model.load_replay_buffer(dataset_path, truncate_last_traj=self.truncate_last_trajectory)
    elif model.num_timesteps > 0:
        warnings.warn(
            f"No dataset found for {self.trained_agent} (a checkpoint <prefix>_<N>_steps.zip needs "
            "<prefix>_replay_buffer_<N>_steps.pkl, any other model replay_buffer.pkl next to it): TWM continues "
            "with an empty dataset, so training does not continue exactly.",
            stacklevel=3,
        )
    return model


def _learn(self: Any, original: Callable[..., None], model: Any) -> None:
    if not self.continue_training:
        return original(self, model)
    # Continue the loaded run (its step counter, schedule phase and dataset) instead of restarting it.
    model.learn = functools.partial(model.learn, reset_num_timesteps=False)
    try:
        return original(self, model)
    finally:
        del model.learn  # the instance attribute would otherwise be saved with the model
