"""
Checkpoints of TWM and exact resume: ``TWM.save``/``TWM.load`` and ``save_replay_buffer``/``load_replay_buffer``.

``save()`` writes everything training depends on besides the dataset: all networks and optimiser states, the env-step,
update and episode counters, the schedule phase (``_pretrained``, ``_train_credit``, the training steps owed to steps
already collected), the skipped-update counter, the episode statistics and every random generator (torch CPU/CUDA,
numpy's and Python's global ones and the action space's, which draws the prefill's random actions).
``save_replay_buffer()`` writes the dataset (observations, actions, rewards, flags, visit counts, ring position, latest
next observations) as an ``.npz``. Both files are written to a temporary file and renamed into place, and neither is
ever unpickled at load: the model's attributes are plain JSON (classes by name, from already imported modules only; a
callable ``learning_rate`` other than SB3's and rl-zoo3's schedule classes is code, which is not stored: pass it again
at load with ``custom_objects``), the dataset holds plain arrays. SB3's ``CheckpointCallback(save_replay_buffer=True)``
saves a consistent pair at any step: TWM stores each step in the dataset before the callbacks see it, and the training
that step is owed runs first thing when the run resumes.

The env's own state cannot be saved, so a resumed run starts new episodes: ``learn(reset_num_timesteps=False)`` on a
loaded model resets the envs, marks an episode boundary in the dataset and, with a ``seed``, seeds the envs with
``resume_seed(seed, num_timesteps)``. The same happens in a run that keeps going in one process when its envs are
replaced or reset at that step (``set_env(new_env)``, then ``learn(..., reset_num_timesteps=False)``). Exact resume
means: on CPU, with a ``seed``, ``torch.use_deterministic_algorithms(True)``, equally built envs and a constant learning
rate, ``learn(N)``; ``save``; ``save_replay_buffer``; then in a new process ``load`` (with a fresh env);
``load_replay_buffer``; ``learn(M, reset_num_timesteps=False)`` gives bit-for-bit the parameters, optimiser states,
dataset and counters of ``learn(N)``; ``set_env(fresh env)``; ``learn(M, reset_num_timesteps=False)`` in one process. A
checkpoint saved by a callback at step N (``train_freq=1``) resumes exactly like that too. With a learning-rate
schedule, the resumed run follows the total of its own ``learn()`` call, as SB3 does. Callbacks that draw random
numbers (``EvalCallback``: TWM samples actions when evaluating) must fire at the same steps in both runs.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
import pathlib
import pickle
import warnings
import zipfile
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from stable_baselines3.common.type_aliases import GymEnv, TrainFreq
from stable_baselines3.common.utils import check_for_correct_spaces, get_device, get_system_info
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    CheckpointError,
    capture_rng_state,
    check_rng_state,
    decode_value,
    describe_unsaved,
    display_name,
    encode_value,
    existing_path,
    is_unsaved,
    open_for_reading,
    open_for_writing,
    read_npz_into,
    restore_rng_state,
    write_npz,
)
from sb3_twm.common.checkpoints.files import ZipReader
from sb3_twm.common.checkpoints.tensors import (
    check_module_state,
    check_optimizer_state,
    check_tensor,
    read_state,
    tensor_bytes,
)
from sb3_twm.common.checkpoints.values import SCHEDULE_CLASSES
from sb3_twm.twm.policies import POLICY_FORMAT, POLICY_FORMAT_VERSION, TWMPolicy

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM

CHECKPOINT_FORMAT_VERSION = 1
# Run-time state only: when the file cannot give one (e.g. SB3 pickled it), it starts fresh (None) instead.
DROPPABLE_ATTRIBUTES = frozenset(
    {"_last_obs", "_last_original_obs", "_last_episode_starts", "lr_schedule", "ep_info_buffer", "ep_success_buffer"}
)
DATASET_ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "visits")
# The model's state dicts (file names in the zip), besides "critic_target" when the target critic is separate.
STATE_DICTS = (
    "policy",
    "world_model",
    "critic",
    "world_model.observation_optimizer",
    "world_model.dynamics_optimizer",
    "actor_optimizer",
    "critic_optimizer",
)
# Attributes not stored as data, besides SB3's and the state dicts'.
EXCLUDED_ATTRIBUTES = (
    "actor_critic",  # its parts are state dicts
    "critic_target",
    "_metrics",
    "_base_learning_rates",
    "_warned_small_dataset",
    "_autocast_enabled",
    "_progress_bar",
    "lr_schedule",  # rebuilt from learning_rate
    # The env is reset on resume (its state cannot be saved), so the last observations are not needed.
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
)
# Saved attributes a model cannot be rebuilt without, besides its constructor's parameters.
_REQUIRED_ATTRIBUTES = {"policy_class", "observation_space", "action_space", "replay_buffer_class", "train_freq", "n_envs"}
# Caps of the members read besides the state dicts (whose caps come from the networks they are for).
MAX_DATA_BYTES = 64 * 2**20
MAX_SYSTEM_INFO_BYTES = 64 * 2**10
MAX_VARIABLES_BYTES = 2**20
# What decoding or checking crafted data may raise; each becomes a CheckpointError naming the file and the attribute.
_DECODING_ERRORS = (
    CheckpointError,
    TypeError,
    ValueError,
    OverflowError,
    AssertionError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_episode_buffer(value: Any) -> bool:
    # SB3's episode statistics: a deque of {"r": return, "l": length, "t": time} (or success flags), or None.
    if value is None:
        return True
    if not isinstance(value, deque) or not (value.maxlen is None or value.maxlen >= 1):
        return False
    return all(
        isinstance(item, bool) or (isinstance(item, dict) and all(_is_number(v) or isinstance(v, bool) for v in item.values()))
        for item in value
    )


def _is_schedule(value: Any) -> bool:
    return f"{type(value).__module__}.{type(value).__qualname__}" in SCHEDULE_CLASSES


# The training state a checkpoint restores besides the constructor's arguments, each with what it must be: nothing
# else is ever set from a file.
STATE_ATTRIBUTES: dict[str, Callable[[Any], bool]] = {
    "policy_class": lambda value: isinstance(value, type) and issubclass(value, TWMPolicy),
    "observation_space": lambda value: isinstance(value, spaces.Box),
    "action_space": lambda value: isinstance(value, spaces.Discrete),
    "n_envs": lambda value: _is_int(value, 1),
    **{
        key: _is_int
        for key in (
            "num_timesteps",
            "_total_timesteps",
            "_num_timesteps_at_start",
            "_episode_num",
            "_n_updates",
            "_actor_critic_updates",
            "_skipped_updates",
            "_untrained_env_steps",
        )
    },
    "_pretrained": lambda value: isinstance(value, bool),
    "_train_credit": lambda value: _is_number(value) and value >= 0,
    "_current_progress_remaining": _is_number,
    "_stats_window_size": lambda value: _is_int(value, 1),
    "start_time": _is_number,
    "action_noise": lambda value: value is None,
    "use_sde": lambda value: value is False,
    "use_sde_at_warmup": lambda value: isinstance(value, bool),
    "sde_sample_freq": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "optimize_memory_usage": lambda value: isinstance(value, bool),
    "tau": _is_number,
    "n_steps": lambda value: _is_int(value, 1),
    "ep_info_buffer": _is_episode_buffer,
    "ep_success_buffer": _is_episode_buffer,
    "_checkpoint": lambda value: isinstance(value, dict) and set(value) == {"version", "rng"},
}
# Constructor arguments whose default (None, or a number that may also be a schedule) does not tell what they are.
_ARGUMENT_CHECKS: dict[str, Callable[[Any], bool]] = {
    "learning_rate": lambda value: (_is_number(value) and value >= 0) or _is_schedule(value),
    "train_freq": lambda value: _is_int(value, 1) or isinstance(value, (TrainFreq, tuple)),
    "train_ratio": lambda value: value is None or _is_number(value),
    "mixed_precision": lambda value: value is None or isinstance(value, bool),
    "seed": lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)),
    "tensorboard_log": lambda value: value is None or isinstance(value, str),
    "replay_buffer_class": lambda value: value is None or (isinstance(value, type) and issubclass(value, TWMReplayBuffer)),
    **{
        key: lambda value: value is None or (isinstance(value, dict) and all(isinstance(k, str) for k in value))
        for key in (
            "world_model_kwargs",
            "observation_optimizer_kwargs",
            "dynamics_optimizer_kwargs",
            "actor_optimizer_kwargs",
            "critic_optimizer_kwargs",
            "replay_buffer_kwargs",
            "policy_kwargs",
        )
    },
}
# Constructor arguments never taken from a file: the caller's (device, env) or not saved as such.
_NOT_FROM_FILE = frozenset({"self", "policy", "env", "device", "_init_setup_model", "stats_window_size"})


def _constructor_defaults(cls: type) -> dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters
    return {key: parameter.default for key, parameter in parameters.items() if key not in _NOT_FROM_FILE}


def _check_attribute(key: str, value: Any, constructor: dict[str, Any]) -> None:
    # Raises ValueError unless the decoded attribute has the type the model needs (its value ranges are checked by
    # the hyperparameter checks when the model is built).
    check = STATE_ATTRIBUTES.get(key) or _ARGUMENT_CHECKS.get(key)
    if check is None:
        default = constructor[key]
        if isinstance(default, bool):
            check = lambda value: isinstance(value, bool)  # noqa: E731
        elif isinstance(default, int):
            check = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
        elif isinstance(default, float):
            check = _is_number
        elif isinstance(default, str):
            check = lambda value: isinstance(value, str)  # noqa: E731
        else:
            return
    if not check(value):
        raise ValueError(f"{str(value)[:80]!r} is not a valid value for it")


def _allowed_class(cls: type) -> bool:
    # The only classes a checkpoint may name: TWM's policies and datasets (and subclasses), and torch's activations.
    if issubclass(cls, (TWMPolicy, TWMReplayBuffer)):
        return True
    return issubclass(cls, nn.Module) and cls.__module__ == "torch.nn.modules.activation"


# What SB3's BaseAlgorithm._excluded_save_params leaves out of every checkpoint.
_SB3_EXCLUDED = ("policy", "device", "env", "replay_buffer", "rollout_buffer", "_vec_normalize_env", "_logger",
                 "_custom_logger")  # fmt: skip
# The tensors saved as pytorch_variables.pth (the random generators' states).
VARIABLES = ("_torch_rng_state", "_cuda_rng_states")
# Attributes that earlier versions saved and this one no longer has (they are ignored at load).
_OBSOLETE_ATTRIBUTES = frozenset({"_actor_max_grad_norm", "_critic_max_grad_norm"})


def save_model(
    model: TWM,
    path: str | pathlib.Path | io.BufferedIOBase,
    exclude: list[str] | None = None,
    include: list[str] | None = None,
) -> None:
    """
    ``TWM.save``: SB3's zip layout, written atomically, with the state an exact resume needs and no pickled data.

    :param model: The model.
    :param path: File (``.zip`` is appended when it has no suffix) or binary file object.
    :param exclude: Attributes not to save, besides the default ones.
    :param include: Attributes to save even though excluded by default.
    """
    data = model.__dict__.copy()
    excluded = set(exclude or []).union(model._excluded_save_params())
    if include is not None:
        excluded = excluded.difference(include)
    state_dict_names, torch_variable_names = model._get_torch_save_params()
    excluded.update(name.split(".")[0] for name in state_dict_names + torch_variable_names)
    for name in excluded:
        data.pop(name, None)
    rng_state, rng_tensors = capture_rng_state(model.action_space)
    data["_checkpoint"] = {"version": CHECKPOINT_FORMAT_VERSION, "rng": rng_state}
    model._torch_rng_state, model._cuda_rng_states = rng_tensors["torch"], rng_tensors["cuda"]
    encoded = {key: encode_value(value) for key, value in data.items()}
    unsaved = sorted(key for key, value in encoded.items() if is_unsaved(value))
    if unsaved:
        warnings.warn(
            f"TWM.save could not store {unsaved} as data (code or unknown objects; checkpoints never hold pickled "
            "objects). Constructor arguments among them must be given to TWM.load again (e.g. "
            f"custom_objects={{'{unsaved[0]}': ...}}); other attributes are not restored.",
            stacklevel=3,
        )
    pytorch_variables = {name: recursive_getattr(model, name) for name in torch_variable_names}
    with open_for_writing(path, "zip") as file:
        save_to_zip_file(file, data=encoded, params=model.get_parameters(), pytorch_variables=pytorch_variables)


def load_model(
    cls: type[TWM],
    path: str | pathlib.Path | io.BufferedIOBase,
    env: GymEnv | None = None,
    device: Any = "auto",
    custom_objects: dict[str, Any] | None = None,
    print_system_info: bool = False,
    force_reset: bool = True,
    **kwargs: Any,
) -> TWM:
    """
    ``TWM.load``: load a model saved by ``save`` and restore its random generators. The file is opened once (only a
    regular file), every member is read at most as large as the model allows, nothing is unpickled (the data is plain
    JSON, the tensors load with ``weights_only=True``) and everything is checked before it is used: attributes by name
    and type, classes against an allow-list, every state dict and optimiser state against the networks the saved
    hyperparameters build. A truncated, corrupted, foreign or crafted file, or an env that does not match the model
    (observation shape, frame stack, number of actions), raises a ``CheckpointError`` (a ``ValueError``) naming the
    file and what is wrong; the process' random generators are then left as they were.

    :param cls: The algorithm class.
    :param path: The zip file (``.zip`` is tried when the path has no suffix) or a seekable binary file object.
    :param env: The env to train on (optional for prediction); the envs are reset before training.
    :param device: Device.
    :param custom_objects: Attributes to use instead of the saved ones (e.g. a callable ``learning_rate``).
    :param print_system_info: Print the saved and the current system info.
    :param force_reset: Kept for SB3 compatibility: the envs are always reset before training.
    :param kwargs: Attributes to change (e.g. hyperparameters).
    :return: The model.
    """
    path = existing_path(path, "zip")
    name = display_name(path)
    process_rng = capture_rng_state()
    try:
        with open_for_reading(path) as file:
            reader = ZipReader(file, name, "TWM checkpoint")
            raw = reader.read_json("data", MAX_DATA_BYTES)
            if not isinstance(raw, dict):
                raise CheckpointError(f"{name}: the 'data' member is not a JSON object")
            objects = _decode_saved_data(cls, name, raw, supplied={**kwargs, **(custom_objects or {})})
            model = _build_model(cls, name, {**objects, **(custom_objects or {})}, env, device, kwargs)
            _load_tensors(model, reader)
            if print_system_info:
                print("== CURRENT SYSTEM INFO ==")
                get_system_info()
                print("== SAVED MODEL SYSTEM INFO ==")
                print(reader.read("system_info.txt", MAX_SYSTEM_INFO_BYTES).decode("utf-8", errors="replace"))
        _restore_checkpoint(model, name)
    except CheckpointError:
        restore_rng_state(*process_rng)
        raise
    except _DECODING_ERRORS as error:
        restore_rng_state(*process_rng)
        raise CheckpointError(f"{name} cannot be loaded as a TWM checkpoint ({type(error).__name__}: {error})") from error
    except BaseException:
        restore_rng_state(*process_rng)
        raise
    return model


def _build_model(
    cls: type[TWM], name: str, data: dict[str, Any], env: GymEnv | None, device: Any, kwargs: dict[str, Any]
) -> TWM:
    # SB3's BaseAlgorithm.load, on the checked attributes: the model is built from the saved hyperparameters.
    for key in ("policy_class", "observation_space", "action_space"):
        if data.get(key) is None:
            raise CheckpointError(f"{name} is not a TWM checkpoint: it has no {key!r}")
    if "policy_kwargs" in kwargs and kwargs["policy_kwargs"] != data.get("policy_kwargs"):
        raise CheckpointError(
            f"{name}: policy_kwargs cannot change at load (saved {data.get('policy_kwargs')}, given {kwargs['policy_kwargs']})"
        )
    if env is not None:
        env = cls._wrap_env(env, int(data.get("verbose", 0)))
        _check_env_matches(name, data, env)
        try:
            check_for_correct_spaces(env, data["observation_space"], data["action_space"])
        except ValueError as error:
            raise CheckpointError(f"{name}: {error}") from None
        data["_last_obs"] = None  # the env is reset before training
        data["n_envs"] = env.num_envs
    model = cls(policy=data["policy_class"], env=env, device=device, _init_setup_model=False)
    model.__dict__.update(data)
    model.__dict__.update(kwargs)
    try:
        model._setup_model()
    except (ValueError, TypeError, AssertionError, KeyError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{name}: the saved hyperparameters are invalid ({type(error).__name__}: {error})") from None
    return model


def _load_tensors(model: TWM, reader: ZipReader) -> None:
    # Every state dict the model saves, checked against the network or optimiser it is for, then the RNG tensors.
    state_dicts, variable_names = model._get_torch_save_params()
    for state_name in state_dicts:
        target = recursive_getattr(model, state_name)
        member, where = f"{state_name}.pth", f"{reader.name}: member '{state_name}.pth'"
        if isinstance(target, th.optim.Optimizer):
            parameters = [p for group in target.param_groups for p in group["params"]]
            state = read_state(reader, member, tensor_bytes(parameters * 3), model.device)
            check_optimizer_state(where, target, state)
        else:
            state = read_state(reader, member, tensor_bytes(list(target.state_dict().values())), model.device)
            check_module_state(where, target, state)
        target.load_state_dict(state)
    variables = read_state(reader, "pytorch_variables.pth", MAX_VARIABLES_BYTES, th.device("cpu"))
    where = f"{reader.name}: member 'pytorch_variables.pth'"
    if not isinstance(variables, dict) or set(variables) != set(variable_names):
        keys = sorted(variables, key=str) if isinstance(variables, dict) else type(variables).__name__
        raise CheckpointError(f"{where} holds {keys}, expected exactly {sorted(variable_names)}")
    check_tensor(f"{where}: '_torch_rng_state'", variables["_torch_rng_state"], th.get_rng_state())
    cuda = variables["_cuda_rng_states"]
    if not (isinstance(cuda, th.Tensor) and cuda.dtype == th.uint8 and (cuda.numel() == 0 or cuda.dim() == 2)):
        raise CheckpointError(f"{where}: '_cuda_rng_states' is not an empty or 2-D uint8 tensor")
    model._torch_rng_state, model._cuda_rng_states = variables["_torch_rng_state"], cuda


def _decode_saved_data(
    cls: type[TWM], name: str, raw: dict[str, Any], supplied: dict[str, Any]
) -> dict[str, Any]:
    """
    Decode and check the saved attributes a model may be restored from (constructor arguments and training state,
    see ``STATE_ATTRIBUTES``); others are left out with a warning.

    :param cls: The algorithm class.
    :param name: The file, for messages.
    :param raw: The JSON ``data``.
    :param supplied: Attributes the caller gives (``custom_objects`` and keyword arguments): not decoded.
    :return: Attribute name -> value.
    """
    constructor = _constructor_defaults(cls)
    never_saved = {*_SB3_EXCLUDED, *EXCLUDED_ATTRIBUTES, *(n.split(".")[0] for n in STATE_DICTS), *VARIABLES}
    objects: dict[str, Any] = {}
    refused, dropped = [], []
    for key, value in raw.items():
        if key in _OBSOLETE_ATTRIBUTES or key in supplied:
            continue  # the caller's value replaces it (custom_objects, or kwargs applied after)
        pickled = isinstance(value, dict) and ":serialized:" in value  # SB3's cloudpickled form
        if key in DROPPABLE_ATTRIBUTES and (pickled or key in never_saved):
            continue  # run-time state, which starts fresh
        if key in never_saved:
            raise CheckpointError(f"{name}: attribute {key!r} is never part of a TWM checkpoint (not loaded from files)")
        if key not in constructor and key not in STATE_ATTRIBUTES:
            dropped.append(key)  # e.g. one a user added: never set from a file
            continue
        if pickled:
            refused.append(key)  # a foreign or an older checkpoint
            continue
        if is_unsaved(value):
            raise CheckpointError(
                f"{name}: attribute {key!r} was {describe_unsaved(value)}, which a checkpoint does not store (no code is "
                f"saved): pass it to TWM.load, e.g. custom_objects={{{key!r}: ...}}."
            )
        try:
            objects[key] = decode_value(value, allowed_class=_allowed_class)
            _check_attribute(key, objects[key], constructor)
        except _DECODING_ERRORS as error:
            raise CheckpointError(f"{name}: attribute {key!r}: {type(error).__name__}: {str(error)[:300]}") from None
    if dropped:
        warnings.warn(f"{name}: the attributes {dropped} cannot be restored from the file and are left out.", stacklevel=4)
    if refused:
        raise CheckpointError(
            f"{name} holds pickled attributes {refused} (written by SB3's cloudpickle, e.g. by another algorithm "
            "or an older sb3-twm). TWM never unpickles checkpoint data: pass these in custom_objects if you "
            "trust the file's origin and know their values."
        )
    _check_saved_classes(name, objects, supplied)
    return objects


def _check_saved_classes(name: str, objects: dict[str, Any], supplied: dict[str, Any]) -> None:
    checkpoint = objects.get("_checkpoint")
    version = checkpoint.get("version") if isinstance(checkpoint, dict) else checkpoint
    if checkpoint is not None and version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: checkpoint format version {version!r:.80} is not supported (this sb3-twm reads version "
            f"{CHECKPOINT_FORMAT_VERSION})"
        )
    expected = {"observation_space": spaces.Box, "action_space": spaces.Discrete}
    for key, kind in expected.items():
        if key not in supplied and not isinstance(objects.get(key), kind):
            raise CheckpointError(f"{name} is not a TWM checkpoint: its {key} is not a {kind.__name__} space")
    policy_class = supplied.get("policy_class", objects.get("policy_class"))
    if not (isinstance(policy_class, type) and issubclass(policy_class, TWMPolicy)):
        raise CheckpointError(f"{name} is not a TWM checkpoint: its policy class is {policy_class!r}")
    buffer_class = supplied.get("replay_buffer_class", objects.get("replay_buffer_class"))
    if buffer_class is not None and not (isinstance(buffer_class, type) and issubclass(buffer_class, TWMReplayBuffer)):
        raise CheckpointError(f"{name} is not a TWM checkpoint: its dataset class is {buffer_class!r}")


def _check_env_matches(name: str, objects: dict[str, Any], env: VecEnv) -> None:
    # Clearer than SB3's "spaces do not match": say which preprocessing differs.
    model_actions, env_actions = objects.get("action_space"), env.action_space
    if isinstance(model_actions, spaces.Discrete) and not (
        isinstance(env_actions, spaces.Discrete) and env_actions.n == model_actions.n
    ):
        raise CheckpointError(
            f"{name}: the model was trained with {model_actions.n} actions ({model_actions}), the env has "
            f"{env_actions}: use an env with the same action set (same game, same full_action_space setting)."
        )
    model_obs, env_obs = objects.get("observation_space"), env.observation_space
    if not isinstance(model_obs, spaces.Box):
        return
    if not isinstance(env_obs, spaces.Box) or env_obs.shape != model_obs.shape:
        shape = getattr(env_obs, "shape", None)
        if shape is not None and len(shape) == 3 == len(model_obs.shape) and shape[1:] == model_obs.shape[1:]:
            raise CheckpointError(
                f"{name}: the model was trained on images with {model_obs.shape[0]} channels (e.g. "
                f"{model_obs.shape[0]} stacked frames), the env gives {shape[0]} (observations {shape}, channels "
                f"first): stack the same number of frames (VecFrameStack(env, n_stack={model_obs.shape[0]}), "
                f"make_twm_atari_env(..., frame_stack={model_obs.shape[0]}))."
            )
        raise CheckpointError(
            f"{name}: the model was trained on observations of shape {model_obs.shape}, the env gives "
            f"{shape if shape is not None else env_obs} (images channels first): preprocess the env as in training "
            "(image size, grayscale, frame stack)."
        )
    if env_obs != model_obs:
        raise CheckpointError(
            f"{name}: the env's observation space {env_obs} differs from the model's {model_obs} in dtype or bounds."
        )


def _restore_checkpoint(model: TWM, name: str) -> None:
    """Put the random generators in the state save() captured (last: building the model drew from them)."""
    checkpoint = model.__dict__.pop("_checkpoint", None)
    if checkpoint is None:
        return
    tensors = {"torch": model._torch_rng_state, "cuda": model._cuda_rng_states}
    try:
        check_rng_state(checkpoint["rng"], tensors)
        restore_rng_state(checkpoint["rng"], tensors, model.action_space)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    except _DECODING_ERRORS as error:
        raise CheckpointError(f"{name}: the random-generator states are malformed ({type(error).__name__})") from None


# ------------------------------------------------------------------------------------------------------ the dataset
def dataset_arrays(buffer: TWMReplayBuffer, stored: int) -> dict[str, np.ndarray]:
    """
    :param buffer: The dataset.
    :param stored: Time steps to include.
    :return: The arrays of a dataset file: views of the first ``stored`` time steps, and the latest next observations.
    """
    return {
        **{name: getattr(buffer, name)[:stored] for name in DATASET_ARRAYS},
        "latest_next_observations": buffer.latest_next_observations,
    }


def save_dataset(model: TWM, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    ``TWM.save_replay_buffer``: the dataset as an ``.npz`` of plain arrays (no pickle), atomically: observations,
    actions, rewards, terminated and truncated flags and visit counts of the stored steps, the latest next observations,
    and a JSON ``metadata`` entry (format version, spaces, ``n_envs``, capacity, ring position, ``num_timesteps``). The
    content is ``.npz`` whatever the name (``CheckpointCallback`` and rl-zoo3 name it ``.pkl``).

    :param model: The model.
    :param path: File (``.npz`` is appended when it has no suffix) or binary file object.
    """
    assert model.replay_buffer is not None, "The replay buffer is not defined"
    buffer = model.replay_buffer
    metadata = {
        "format": DATASET_FORMAT,
        "version": DATASET_FORMAT_VERSION,
        "buffer_class": f"{type(buffer).__module__}.{type(buffer).__qualname__}",
        "buffer_size": buffer.buffer_size,
        "n_envs": buffer.n_envs,
        "pos": buffer.pos,
        "full": buffer.full,
        "observation_space": encode_value(buffer.observation_space),
        "action_space": encode_value(buffer.action_space),
        "temperature": buffer.temperature,
        "handle_timeout_termination": buffer.handle_timeout_termination,
        "num_timesteps": model.num_timesteps,
    }
    with open_for_writing(path, "npz") as file:
        write_npz(file, metadata, dataset_arrays(buffer, buffer.size()))


def load_dataset(model: TWM, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    ``TWM.load_replay_buffer``: read a dataset into a new buffer and check it (format, spaces, ``n_envs``, capacity,
    array shapes and dtypes, CRCs, action range, finite rewards and visit counts) before it replaces the model's: a
    truncated, corrupted, foreign or mismatching file raises a ``CheckpointError`` naming the file and leaves the model's
    dataset as it was. Nothing is unpickled.

    :param model: The model.
    :param path: The file (``.npz`` is tried when the path has no suffix) or a binary file object.
    """
    path = existing_path(path, "npz")
    name = display_name(path)
    buffer = model._make_replay_buffer()
    metadata = read_npz_into(path, functools.partial(_dataset_destinations, buffer))
    buffer.pos, buffer.full = int(metadata["pos"]), bool(metadata["full"])
    _check_dataset_content(name, buffer)
    buffer.device = model.device  # as SB3's load_replay_buffer: the model's device, whatever the buffer resolved
    saved_at = metadata.get("num_timesteps")
    if model.num_timesteps > 0 and saved_at != model.num_timesteps:
        warnings.warn(
            f"The dataset {name} was saved at step {saved_at}, the model is at step {model.num_timesteps}: "
            "they are not from the same checkpoint, so training will not continue exactly.",
            stacklevel=3,
        )
    model.replay_buffer = buffer


def _dataset_destinations(buffer: TWMReplayBuffer, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    # Validate the metadata against the model, then give the arrays to read into.
    for key in ("n_envs", "buffer_size", "pos"):
        if not _is_int(metadata.get(key)):
            raise CheckpointError(f"the metadata's {key}={str(metadata.get(key))[:40]!r} is not a non-negative integer")
    if not isinstance(metadata.get("full"), bool):
        raise CheckpointError(f"the metadata's full={str(metadata.get('full'))[:40]!r} is not true or false")
    if metadata["n_envs"] != buffer.n_envs:
        raise CheckpointError(
            f"the dataset was collected with {metadata['n_envs']} envs, the model has {buffer.n_envs}: "
            "load it into a model with as many envs"
        )
    if metadata["buffer_size"] != buffer.buffer_size:
        raise CheckpointError(
            f"the dataset holds up to {metadata['buffer_size']} steps per env, the model's buffer_size gives "
            f"{buffer.buffer_size}: load it into a model with buffer_size={metadata['buffer_size'] * buffer.n_envs}"
        )
    observation_space = decode_value(metadata["observation_space"], allowed_class=lambda cls: False)
    if observation_space != buffer.observation_space:
        raise CheckpointError(f"the dataset's observations are {observation_space}, the model's {buffer.observation_space}")
    action_space = decode_value(metadata["action_space"], allowed_class=lambda cls: False)
    if action_space != buffer.action_space:
        raise CheckpointError(f"the dataset's actions are {action_space}, the model's {buffer.action_space}")
    pos, full = metadata["pos"], metadata["full"]
    if not pos < buffer.buffer_size:
        raise CheckpointError(f"the ring position pos={pos!r}, full={full!r} is invalid")
    return dataset_arrays(buffer, buffer.buffer_size if full else pos)


def _within_bounds(buffer: TWMReplayBuffer, stored: int) -> bool:
    # Bounds that the dtype already enforces (uint8 images in [0, 255]) need no pass over the data.
    space = buffer.observation_space
    if space.dtype == bool:
        return True
    info = np.finfo(space.dtype) if space.dtype.kind == "f" else np.iinfo(space.dtype)
    if np.all(space.low <= info.min) and np.all(space.high >= info.max):
        return True
    return all(
        np.all((array >= space.low) & (array <= space.high)) or (space.dtype.kind == "f" and not np.isfinite(array).all())
        for array in (buffer.observations[:stored], buffer.latest_next_observations)
    )


def _check_dataset_content(name: str, buffer: TWMReplayBuffer) -> None:
    stored = buffer.size()
    checks = {
        "actions outside the action space": np.any(
            (buffer.actions[:stored] < 0) | (buffer.actions[:stored] >= buffer.action_space.n)
        ),
        "non-finite rewards": not np.all(np.isfinite(buffer.rewards[:stored])),
        "negative or non-finite visit counts": not np.all(np.isfinite(buffer.visits[:stored]))
        or np.any(buffer.visits[:stored] < 0),
        "flags that are not 0 or 1": any(
            np.any(getattr(buffer, flag)[:stored].view(np.uint8) > 1) for flag in ("terminated", "truncated")
        ),
        "non-finite observations": buffer.observations.dtype.kind == "f"
        and not all(np.isfinite(array).all() for array in (buffer.observations[:stored], buffer.latest_next_observations)),
        "observations outside the observation space": not _within_bounds(buffer, stored),
    }
    problems = [problem for problem, found in checks.items() if found]
    if problems:
        raise CheckpointError(f"{name}: the dataset holds {', '.join(problems)} (corrupted or not TWM's)")


# ------------------------------------------------------------------------------------------------------ policy files
def load_policy(cls: type[TWMPolicy], path: str | pathlib.Path, device: Any = "auto") -> TWMPolicy:
    """See ``TWMPolicy.load``."""
    path = pathlib.Path(path)
    name = str(path)
    with open_for_reading(path) as file:
        if file.read(1) == b"\x80":
            raise CheckpointError(
                f"{name} is a pickle (a policy saved by SB3 or an older sb3-twm): TWM never unpickles files; load it with "
                "stable_baselines3's BaseModel.load only if you trust its origin, then save it again."
            )
        file.seek(0)
        reader = ZipReader(file, name, "TWM policy file")
        if "format" not in reader and any(member.endswith("data.pkl") for member in reader.members):
            raise CheckpointError(
                f"{name} is a torch.save pickle (a policy saved by SB3 or an older sb3-twm): TWM never unpickles files; "
                "load it with stable_baselines3's BaseModel.load only if you trust its origin, then save it again."
            )
        metadata = reader.read_json("format", 2**10)
        if not (isinstance(metadata, dict) and metadata.get("format") == POLICY_FORMAT):
            raise CheckpointError(f"{name} is not a TWM policy file")
        if metadata.get("version") != POLICY_FORMAT_VERSION:
            raise CheckpointError(f"{name}: policy file version {str(metadata.get('version'))[:20]} is not supported")
        raw = reader.read_json("data", MAX_DATA_BYTES)
        if not isinstance(raw, dict):
            raise CheckpointError(f"{name}: the 'data' member is not a JSON object")
        try:
            data = {key: decode_value(value, allowed_class=_allowed_class) for key, value in raw.items()}
            policy_class = data.pop("policy_class", cls)
            if not (isinstance(policy_class, type) and issubclass(policy_class, cls)):
                raise CheckpointError(f"it holds a {policy_class!r}, not a {cls.__name__}")
            policy = policy_class(**data)
        except _DECODING_ERRORS as error:
            raise CheckpointError(f"{name}: the policy's arguments are invalid ({type(error).__name__}: {error})") from None
        policy = policy.to(get_device(device))
        state = read_state(reader, "policy.pth", tensor_bytes(list(policy.state_dict().values())), policy.device)
        check_module_state(f"{name}: member 'policy.pth'", policy, state)
        policy.load_state_dict(state)
    return policy
