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
import pathlib
import pickle
import warnings
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecEnv

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
    open_for_writing,
    read_npz_into,
    read_zip_json,
    restore_rng_state,
    write_npz,
)
from sb3_twm.twm.policies import TWMPolicy

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
    "lr_schedule",  # rebuilt from learning_rate
    # The env is reset on resume (its state cannot be saved), so the last observations are not needed.
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
)
# Saved attributes a model cannot be rebuilt without, besides its constructor's parameters.
_REQUIRED_ATTRIBUTES = {"policy_class", "observation_space", "action_space", "replay_buffer_class", "train_freq", "n_envs"}
# Attributes that earlier versions saved and this one no longer has (they are ignored at load).
_OBSOLETE_ATTRIBUTES = frozenset({"_actor_max_grad_norm", "_critic_max_grad_norm"})
# Key under which _decode_saved_data returns the attributes to leave out.
_DROPPED = "_twm_dropped_attributes"


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
    ``TWM.load``: load a model saved by ``save`` without unpickling anything (the data is plain JSON, the tensors load
    with ``weights_only=True``) and restore its random generators. A truncated, corrupted or foreign file, or an env
    that does not match the model (observation shape, frame stack, number of actions), raises a ``CheckpointError``
    (a ``ValueError``) naming the file; the process' random generators are then left as they were.

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
        raw = read_zip_json(path)
        objects = _decode_saved_data(cls, name, raw, supplied={**kwargs, **(custom_objects or {})})
        dropped = objects.pop(_DROPPED, [])
        if env is not None and not isinstance(env, str):
            env = cls._wrap_env(env, int(raw.get("verbose", 0)))
            _check_env_matches(name, objects, env)
        # SB3's loader, with every saved attribute already decoded: it never unpickles one.
        model = BaseAlgorithm.load.__func__(
            cls,
            path,
            env=env,
            device=device,
            custom_objects={**objects, **(custom_objects or {})},
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        for key in dropped:
            # custom_objects can only replace a saved attribute: remove what was replaced by None.
            model.__dict__.pop(key, None)
        _restore_checkpoint(model)
    except CheckpointError:
        restore_rng_state(*process_rng)
        raise
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        # E.g. state dicts that do not fit the networks the saved hyperparameters build, or a .pth that is not
        # plain tensors (refused by weights_only=True).
        restore_rng_state(*process_rng)
        raise CheckpointError(f"{name} cannot be loaded as a TWM checkpoint ({type(error).__name__}: {error})") from error
    except BaseException:
        restore_rng_state(*process_rng)
        raise
    return model


def _decode_saved_data(cls: type[TWM], name: str, raw: dict[str, Any], supplied: dict[str, Any]) -> dict[str, Any]:
    """
    Decode every saved attribute (SB3 then takes them as ``custom_objects``, so it never unpickles one).

    :param cls: The algorithm class.
    :param name: The file, for messages.
    :param raw: The JSON ``data``.
    :param supplied: Attributes the caller gives (``custom_objects`` and keyword arguments).
    :return: Attribute name -> value.
    """
    objects: dict[str, Any] = {}
    refused, dropped = [], []
    # What the model is built from must be restored; any other public attribute (e.g. one a user added) may be
    # left out, with a warning, when the file cannot give it.
    required = set(inspect.signature(cls.__init__).parameters) | _REQUIRED_ATTRIBUTES
    for key, value in raw.items():
        if key in _OBSOLETE_ATTRIBUTES:
            continue
        if key in supplied:
            objects[key] = None  # the caller's value replaces it (custom_objects, or kwargs applied after)
            continue
        problem = None
        if isinstance(value, dict) and ":serialized:" in value:
            problem = "pickled"  # SB3's cloudpickled form: a foreign or an older checkpoint
        elif is_unsaved(value):
            problem = "unsaved"
        else:
            try:
                objects[key] = decode_value(value)
            except CheckpointError as error:
                problem = str(error)
        if problem is None:
            continue
        objects[key] = None
        if key in DROPPABLE_ATTRIBUTES:
            continue  # run-time state, for which None is the fresh value
        if key not in required and not key.startswith("_"):
            dropped.append(key)
        elif problem == "pickled":
            refused.append(key)
        elif problem == "unsaved":
            raise CheckpointError(
                f"{name}: attribute {key!r} was {describe_unsaved(value)}, which a checkpoint does not store (no code is "
                f"saved): pass it to TWM.load, e.g. custom_objects={{{key!r}: ...}}."
            )
        else:
            raise CheckpointError(f"{name}: attribute {key!r}: {problem}")
    if dropped:
        warnings.warn(f"{name}: the attributes {dropped} cannot be restored from the file and are left out.", stacklevel=4)
        objects[_DROPPED] = dropped
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


def _restore_checkpoint(model: TWM) -> None:
    """Put the random generators in the state save() captured (last: building the model drew from them)."""
    checkpoint = model.__dict__.pop("_checkpoint", None)
    if checkpoint is None:
        return
    tensors = {"torch": model._torch_rng_state, "cuda": model._cuda_rng_states}
    check_rng_state(checkpoint.get("rng"), tensors)
    restore_rng_state(checkpoint["rng"], tensors, model.action_space)


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
    if int(metadata["n_envs"]) != buffer.n_envs:
        raise CheckpointError(
            f"the dataset was collected with {metadata['n_envs']} envs, the model has {buffer.n_envs}: "
            "load it into a model with as many envs"
        )
    if int(metadata["buffer_size"]) != buffer.buffer_size:
        raise CheckpointError(
            f"the dataset holds up to {metadata['buffer_size']} steps per env, the model's buffer_size gives "
            f"{buffer.buffer_size}: load it into a model with buffer_size={int(metadata['buffer_size']) * buffer.n_envs}"
        )
    observation_space = decode_value(metadata["observation_space"])
    if observation_space != buffer.observation_space:
        raise CheckpointError(f"the dataset's observations are {observation_space}, the model's {buffer.observation_space}")
    action_space = decode_value(metadata["action_space"])
    if action_space != buffer.action_space:
        raise CheckpointError(f"the dataset's actions are {action_space}, the model's {buffer.action_space}")
    pos, full = metadata["pos"], metadata["full"]
    if not (isinstance(pos, int) and isinstance(full, bool) and 0 <= pos < buffer.buffer_size):
        raise CheckpointError(f"the ring position pos={pos!r}, full={full!r} is invalid")
    return dataset_arrays(buffer, buffer.buffer_size if full else pos)


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
    }
    problems = [problem for problem, found in checks.items() if found]
    if problems:
        raise CheckpointError(f"{name}: the dataset holds {', '.join(problems)} (corrupted or not TWM's)")
