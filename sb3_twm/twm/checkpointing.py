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

import io
import pathlib
import pickle
import warnings
import zipfile
from typing import TYPE_CHECKING, Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import check_for_correct_spaces, get_device, get_system_info
from stable_baselines3.common.vec_env import VecEnv

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints import (
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
    restore_rng_state,
)
from sb3_twm.common.checkpoints.files import ZipReader
from sb3_twm.common.checkpoints.tensors import (
    check_module_state,
    check_optimizer_state,
    check_tensor,
    read_state,
    tensor_bytes,
)
from sb3_twm.common.checks import check_action_space
from sb3_twm.twm.policies import POLICY_FORMAT, POLICY_FORMAT_VERSION, TWMPolicy
from sb3_twm.twm.saved_attributes import STATE_ATTRIBUTES, allowed_class, check_attribute, constructor_defaults

if TYPE_CHECKING:
    from sb3_twm.twm.twm import TWM

CHECKPOINT_FORMAT_VERSION = 1
# Run-time state only: when the file cannot give one (e.g. SB3 pickled it), it starts fresh (None) instead.
DROPPABLE_ATTRIBUTES = frozenset(
    {"_last_obs", "_last_original_obs", "_last_episode_starts", "lr_schedule", "ep_info_buffer", "ep_success_buffer"}
)
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
# The 'data' member holds the attributes: tens of kilobytes, up to a few megabytes for a Box with per-element bounds.
MAX_DATA_BYTES = 16 * 2**20
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
            if "format" in reader and "world_model.pth" not in reader:
                raise CheckpointError(
                    f"{name} is a TWM policy file (policy.save: the encoder and the actor only), not a model saved by "
                    "TWM.save (it has no world model): load it with TWMPolicy.load"
                )
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
    constructor = constructor_defaults(cls)
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
            objects[key] = decode_value(value, allowed_class=allowed_class)
            check_attribute(key, objects[key], constructor)
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
    expected = {"observation_space": (spaces.Box,), "action_space": (spaces.Discrete, spaces.Box)}
    for key, kinds in expected.items():
        if key not in supplied and not isinstance(objects.get(key), kinds):
            names = " or ".join(kind.__name__ for kind in kinds)
            raise CheckpointError(f"{name} is not a TWM checkpoint: its {key} is not a {names} space")
    if "action_space" not in supplied:
        try:
            check_action_space(objects["action_space"])
        except ValueError as error:
            raise CheckpointError(f"{name}: {error}") from None
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
            data = {key: decode_value(value, allowed_class=allowed_class) for key, value in raw.items()}
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
