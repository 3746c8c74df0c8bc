"""TWM: Transformer-based World Models (Robine et al., ICLR 2023) as a Stable-Baselines3 off-policy algorithm."""

import contextlib
import copy
import functools
import inspect
import io
import math
import pathlib
import pickle
import warnings
import zipfile
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import update_learning_rate
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_twm.common.buffers import SequenceBatch, TWMReplayBuffer
from sb3_twm.common.checkpoints import (
    CHECKPOINT_FORMAT_VERSION,
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    DROPPABLE_ATTRIBUTES,
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
    resume_seed,
    write_npz,
)
from sb3_twm.common.cpu_memory import reuse_freed_memory
from sb3_twm.common.optim import make_adam, optimizer_step
from sb3_twm.twm.actor_critic import actor_loss, critic_loss, lambda_returns
from sb3_twm.twm.policies import CnnPolicy, MlpPolicy, TWMPolicy
from sb3_twm.world_model import DynamicsModel, ImaginedTrajectories, ObservationModel, WorldModel, WorldModelBatch, imagine
from sb3_twm.world_model.world_model import WorldModelOutput

SelfTWM = TypeVar("SelfTWM", bound="TWM")

REWARD_TRANSFORMS: dict[str, Callable[[th.Tensor], th.Tensor]] = {
    "tanh": th.tanh,
    "sign": th.sign,
    "none": lambda reward: reward,
}

DEFAULT_WORLD_MODEL_KWARGS: dict[str, Any] = {
    # dynamics model (Transformer-XL and heads)
    "embed_dim": 256,
    "num_heads": 4,
    "head_dim": 64,
    "num_layers": 10,
    "feedforward_dim": 1024,
    "memory_length": 16,
    "z_head_dims": [512, 512, 512, 512],
    "reward_head_dims": [256, 256, 256, 256],
    "discount_head_dims": [256, 256, 256, 256],
    "dropout": 0.1,
    "input_rewards": True,
    # loss weights
    "decoder_coef": 1.0,
    "latent_entropy_coef": 5.0,
    "latent_entropy_threshold": 0.1,
    "consistency_coef": 0.01,
    "z_coef": 1.0,
    "reward_coef": 10.0,
    "discount_coef": 50.0,
}
DEFAULT_OPTIMIZER_KWARGS: dict[str, dict[str, float]] = {
    "observation": {"eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 100.0},
    "dynamics": {"eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 100.0},
    "actor": {"eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 1.0},
    "critic": {"lr": 1e-5, "eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 1.0},
}
_OBSERVATION_MODEL_KEYS = {
    "decoder_coef": "decoder_coef",
    "latent_entropy_coef": "entropy_coef",
    "latent_entropy_threshold": "entropy_threshold",
    "consistency_coef": "consistency_coef",
}
_LOSS_KEYS = ("z_coef", "reward_coef", "discount_coef")


def _check_widths(name: str, widths: Any) -> None:
    # Hidden-layer widths: a zero width builds a network that silently outputs constants.
    if widths is None:
        return
    if not isinstance(widths, (list, tuple)) or not all(
        isinstance(width, (int, np.integer)) and width > 0 for width in widths
    ):
        raise ValueError(f"{name} must be a list of positive layer widths, got {widths!r}.")


def _is_cnn_policy(policy: Any) -> bool:
    if isinstance(policy, str):
        return policy == "CnnPolicy"
    return isinstance(policy, type) and issubclass(policy, TWMPolicy) and policy.observation_architecture == "cnn"


class _StoreStepFirst(BaseCallback):
    """
    The first callback of every ``learn()``: stores the step just taken in the dataset before the user's callbacks
    run, so that a checkpoint saved by one of them (``CheckpointCallback``) holds the step its name counts.
    """

    def _on_step(self) -> bool:
        self.model._commit_step(self.locals)
        return True


class TWM(OffPolicyAlgorithm):
    """
    Transformer-based World Model (TWM).

    Paper: "Transformer-based World Models Are Happy With 100k Interactions", Robine et al., ICLR 2023,
    https://arxiv.org/abs/2303.07109. Authors' code: https://github.com/jrobine/twm (the defaults below are its).

    TWM learns a world model of the environment (a CNN observation model to a discrete latent z and a Transformer-XL
    dynamics model over z, action and reward tokens) and trains an actor-critic only on rollouts imagined by it.
    Acting needs only the encoder and the actor. Training: ``learning_starts`` steps of random actions, a one-off
    pretraining on them (no callbacks fire during it), then ``train_ratio`` training steps per env step, each
    ``world_model_train_steps`` world-model updates and one actor-critic update in imagination.

    Checkpoints and exact resume. ``save()`` writes everything training depends on besides the dataset: all networks
    and optimiser states, the env-step, update and episode counters, the schedule phase (``_pretrained``,
    ``_train_credit``, the training steps owed to steps already collected), the skipped-update counter, the
    episode statistics and every random generator (torch CPU/CUDA, numpy's and Python's global ones and the action
    space's, which draws the prefill's random actions). ``save_replay_buffer()`` writes the dataset (observations,
    actions, rewards, flags, visit counts, ring position, latest next observations) as an ``.npz``. Both files are
    written to a temporary file and renamed into place, and neither is ever unpickled at load: the model's
    attributes are plain JSON (classes by name, from already imported modules only; a callable ``learning_rate``
    other than SB3's and rl-zoo3's schedule classes is code, which is not stored: pass it again at load with
    ``custom_objects``), the dataset holds plain arrays. SB3's ``CheckpointCallback(save_replay_buffer=True)`` saves
    a consistent pair at any step: TWM stores each step in the dataset before the user's callbacks see it, and
    the training that step is owed runs first thing when the run resumes.

    The env's own state cannot be saved, so a resumed run starts new episodes: ``learn(reset_num_timesteps=False)``
    on a loaded model resets the envs, marks an episode boundary in the dataset and, with a ``seed``, seeds the envs
    with ``resume_seed(seed, num_timesteps)``. The same happens in a run that keeps going in one process when its
    envs are replaced or reset at that step (``set_env(new_env)``, then ``learn(..., reset_num_timesteps=False)``).
    Exact resume means: on CPU, with a ``seed``, ``torch.use_deterministic_algorithms(True)``, equally built envs
    and a constant learning rate, ``learn(N)``; ``save``; ``save_replay_buffer``; then in a new process ``load`` (with
    a fresh env); ``load_replay_buffer``; ``learn(M, reset_num_timesteps=False)`` gives bit-for-bit the parameters,
    optimiser states, dataset and counters of ``learn(N)``; ``set_env(fresh env)``; ``learn(M,
    reset_num_timesteps=False)`` in one process. A checkpoint saved by a callback at step N (``train_freq=1``)
    resumes exactly like that too. With a learning-rate schedule, the resumed run follows the total of its own
    ``learn()`` call, as SB3 does. Callbacks that draw random numbers (``EvalCallback``: TWM samples actions when
    evaluating) must fire at the same steps in both runs.

    :param policy: ``"CnnPolicy"`` (stacked image frames) or ``"MlpPolicy"`` (vector observations), or a class.
    :param env: The environment (Gym env, VecEnv or registered id).
    :param learning_rate: Learning rate of the observation model, dynamics model and actor (spec: ``obs_lr``,
        ``dyn_lr``, ``actor_lr``), a float or a schedule of the remaining progress. A schedule scales every
        optimiser (the critic's too) by ``schedule(progress) / schedule(1)``.
    :param buffer_size: Env steps kept in the dataset (``buffer_capacity``).
    :param learning_starts: Random-action steps before any training (``buffer_prefill``). A ``learn()`` call that
        ends at or before it only collects, with a warning (collecting the prefill in several calls is allowed).
    :param batch_size: Sequences per world-model update (``wm_batch_size``).
    :param sequence_length: Steps per world-model sequence (``wm_sequence_length``).
    :param gamma: Discount factor; the discount target is ``gamma * (1 - terminated)``.
    :param gae_lambda: Lambda of the lambda-returns (``env_discount_lambda``).
    :param train_freq: Collect this many steps between training calls (SB3 meaning).
    :param gradient_steps: Training steps per training call; -1 (default) follows ``train_ratio`` training steps per
        env step, with the fraction carried over.
    :param train_ratio: Training steps per env step; None derives it from the budgets as the reference does:
        ``(budget - pretrain_budget) / (world_model_train_steps * batch_size * sequence_length
        + imagination_batch_size * imagination_horizon) / (buffer_size - learning_starts)`` = 1.316 by default.
    :param budget: Sampled steps spent on training over the whole run, pretraining included.
    :param pretrain_budget: Sampled steps spent on the one-off pretraining after ``learning_starts`` (0 skips it).
    :param pretrain_observation_share: Share of ``pretrain_budget`` for the observation model (single frames).
    :param pretrain_dynamics_share: Share for the dynamics model.
    :param pretrain_actor_critic_share: Share for the actor-critic on real latents (0.7 reproduces the reference,
        which computes ``1 - obs + dyn``; 0.1 is ``1 - (obs + dyn)``).
    :param world_model_train_steps: World-model updates per training step (``wm_train_steps``).
    :param imagination_batch_size: Imagined rollouts per actor-critic update (``ac_batch_size``).
    :param imagination_horizon: Imagined steps per rollout (``ac_horizon``).
    :param discount_threshold: A rollout restarts when its cumulative predicted discount drops below this
        (``wm_discount_threshold``).
    :param buffer_temperature: Temperature of the recency-balanced sampling of sequence starts.
    :param reward_transform: Applied to rewards used for training: ``"tanh"`` (paper), ``"sign"`` or ``"none"``.
    :param ent_coef: Weight of the actor's thresholded entropy loss (``actor_entropy_coef``).
    :param entropy_threshold: Normalised policy entropy below which that loss is active (``actor_entropy_threshold``).
    :param normalize_advantage: Normalise advantages per batch (``ac_normalize_advantages``).
    :param mixed_precision: Run training under bf16 autocast (losses, returns and optimiser states stay in float32).
        None (default) turns it on for CUDA devices that support bf16 and off on CPU, so CPU runs compute exactly in
        float32; True on a CPU with bf16 matrix units (AMX) is about twice as fast but no longer bit-identical.
    :param compile_world_model: Compile the world-model update's forward and backward passes with ``torch.compile``
        (the observation model and the dynamics model with their losses; acting and imagination stay eager). The
        same computation up to float rounding, with the compiler's own random draws; the first updates pay the
        compilation (about 80 s on 2 CPU cores at the default sizes). On 2 CPU cores it made a default update about
        13 % faster with glibc's default allocator and is no faster with ``reuse_cpu_memory``. Off by default.
    :param reuse_cpu_memory: While ``learn()`` runs on a CPU device (Linux with glibc), keep the memory that one training
        update frees in the process for the next one instead of returning it to the system: large allocations come
        from the heap and it is not trimmed (``mallopt``), so updates skip the page faults of their large activations
        (about a fifth of a default world-model update on 2 cores). Nothing computed changes; the process holds its
        peak training memory until ``learn()`` returns. No effect on GPU devices or other platforms.
    :param target_update_interval: Actor-critic updates between copies of the critic into its target network;
        1 means no separate target (the critic bootstraps itself).
    :param skip_non_finite_updates: Skip an optimiser step whose gradients are not finite (a NaN/inf loss), leaving
        the weights and the optimiser state unchanged, with a ``RuntimeWarning`` and the count logged as
        ``train/skipped_updates``. The check costs one host-device synchronisation per optimiser step (nothing on
        CPU; on a GPU it stalls the queue briefly four times per training step): set False to drop it.
    :param world_model_kwargs: Dynamics-model architecture and world-model loss weights; keys and defaults in
        ``DEFAULT_WORLD_MODEL_KWARGS`` (``embed_dim`` 256, ``num_heads`` 4, ``head_dim`` 64, ``num_layers`` 10,
        ``feedforward_dim`` 1024, ``memory_length`` 16, ``z_head_dims`` [512]*4, ``reward_head_dims`` and
        ``discount_head_dims`` [256]*4, ``dropout`` 0.1, ``input_rewards`` True, ``decoder_coef`` 1,
        ``latent_entropy_coef`` 5, ``latent_entropy_threshold`` 0.1, ``consistency_coef`` 0.01, ``z_coef`` 1,
        ``reward_coef`` 10, ``discount_coef`` 50).
    :param observation_optimizer_kwargs: Adam settings of the observation model: ``lr`` (default
        ``learning_rate``), ``eps`` 1e-5, ``weight_decay`` 1e-6, ``max_grad_norm`` 100.
    :param dynamics_optimizer_kwargs: Same for the dynamics model (same defaults).
    :param actor_optimizer_kwargs: Same for the actor (``max_grad_norm`` 1).
    :param critic_optimizer_kwargs: Same for the critic (``lr`` 1e-5, ``max_grad_norm`` 1).
    :param replay_buffer_class: Dataset class, a subclass of ``TWMReplayBuffer`` (default).
    :param replay_buffer_kwargs: Extra keyword arguments of the dataset.
    :param stats_window_size: Window of the rollout statistics (episodes).
    :param tensorboard_log: Tensorboard log folder (None: no logging).
    :param policy_kwargs: Policy architecture (``net_arch`` of the actor and critic MLPs, ``latent_categoricals``,
        ``latent_classes``, ``cnn_channels``, ...), see ``TWMPolicy``.
    :param verbose: 0 none, 1 info (training progress, pretraining), 2 debug.
    :param seed: Seed of the pseudo random generators.
    :param device: Device (cpu, cuda, ...); ``"auto"`` uses the GPU when there is one.
    :param _init_setup_model: Whether to build the networks on creation.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"CnnPolicy": CnnPolicy, "MlpPolicy": MlpPolicy}
    policy: TWMPolicy
    replay_buffer: TWMReplayBuffer
    world_model: WorldModel

    def __init__(
        self,
        policy: str | type[TWMPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 100_000,
        learning_starts: int = 5000,
        batch_size: int = 100,
        sequence_length: int = 16,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = -1,
        train_ratio: float | None = None,
        budget: float = 1e9,
        pretrain_budget: float = 5e7,
        pretrain_observation_share: float = 0.6,
        pretrain_dynamics_share: float = 0.3,
        pretrain_actor_critic_share: float = 0.7,
        world_model_train_steps: int = 1,
        imagination_batch_size: int = 400,
        imagination_horizon: int = 15,
        discount_threshold: float = 0.1,
        buffer_temperature: float = 20.0,
        reward_transform: str = "tanh",
        ent_coef: float = 0.01,
        entropy_threshold: float = 0.1,
        normalize_advantage: bool = False,
        target_update_interval: int = 1,
        mixed_precision: bool | None = None,
        compile_world_model: bool = False,
        reuse_cpu_memory: bool = True,
        skip_non_finite_updates: bool = True,
        world_model_kwargs: dict[str, Any] | None = None,
        observation_optimizer_kwargs: dict[str, Any] | None = None,
        dynamics_optimizer_kwargs: dict[str, Any] | None = None,
        actor_optimizer_kwargs: dict[str, Any] | None = None,
        critic_optimizer_kwargs: dict[str, Any] | None = None,
        replay_buffer_class: type[TWMReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if isinstance(getattr(env, "observation_space", None), (spaces.Dict, spaces.Tuple)):
            raise ValueError(
                "TWM supports Box observations only (images with CnnPolicy, vectors with MlpPolicy), got "
                f"{env.observation_space}: flatten it with gymnasium.wrappers.FlattenObservation and use MlpPolicy."
            )
        observation_space = getattr(env, "observation_space", None)
        if _is_cnn_policy(policy) and isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3:
            height_or_channels, middle, last = observation_space.shape
            if middle < height_or_channels and middle < last:
                # SB3 would take the last axis for channels and pass on a garbled image.
                raise ValueError(
                    f"CnnPolicy needs images as (height, width, channels) or (channels, height, width), got shape "
                    f"{observation_space.shape}: its smallest axis is in the middle, which looks like a misplaced "
                    "channel axis. Transpose the observations (e.g. gymnasium.wrappers.TransformObservation)."
                )
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=1.0,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
        )
        if env is not None and not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(
                f"TWM supports only Discrete action spaces, got {self.action_space}. "
                "Use an algorithm for continuous control (e.g. SAC) or discretise the actions."
            )
        self.sequence_length = sequence_length
        self.gae_lambda = gae_lambda
        self.train_ratio = train_ratio
        self.budget = budget
        self.pretrain_budget = pretrain_budget
        self.pretrain_observation_share = pretrain_observation_share
        self.pretrain_dynamics_share = pretrain_dynamics_share
        self.pretrain_actor_critic_share = pretrain_actor_critic_share
        self.world_model_train_steps = world_model_train_steps
        self.imagination_batch_size = imagination_batch_size
        self.imagination_horizon = imagination_horizon
        self.discount_threshold = discount_threshold
        self.buffer_temperature = buffer_temperature
        self.reward_transform = reward_transform
        self.ent_coef = ent_coef
        self.entropy_threshold = entropy_threshold
        self.normalize_advantage = normalize_advantage
        self.target_update_interval = target_update_interval
        self.mixed_precision = mixed_precision
        self.compile_world_model = compile_world_model
        self.reuse_cpu_memory = reuse_cpu_memory
        self.skip_non_finite_updates = skip_non_finite_updates
        self.world_model_kwargs = world_model_kwargs or {}
        self.observation_optimizer_kwargs = observation_optimizer_kwargs or {}
        self.dynamics_optimizer_kwargs = dynamics_optimizer_kwargs or {}
        self.actor_optimizer_kwargs = actor_optimizer_kwargs or {}
        self.critic_optimizer_kwargs = critic_optimizer_kwargs or {}
        # Training state that save() keeps (plain attributes).
        self._pretrained = False
        self._train_credit = 0.0
        self._actor_critic_updates = 0
        self._skipped_updates = 0
        # Env steps collected in the current rollout whose training call has not happened yet: nonzero only while a
        # rollout runs, so a checkpoint saved by a callback knows the training a resumed run owes.
        self._untrained_env_steps = 0
        # Transient: the step just taken is already stored (by the first callback), collect_rollouts must not again.
        self._step_committed = False
        self._pending_episodes = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _check_hyperparameters(self) -> None:
        positive_ints = {
            "buffer_size": self.buffer_size,
            "batch_size": self.batch_size,
            "sequence_length": self.sequence_length,
            "world_model_train_steps": self.world_model_train_steps,
            "imagination_batch_size": self.imagination_batch_size,
            "imagination_horizon": self.imagination_horizon,
            "target_update_interval": self.target_update_interval,
        }
        for name, value in positive_ints.items():
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}.")
        frequency = self.train_freq[0] if isinstance(self.train_freq, tuple) else self.train_freq
        if not isinstance(frequency, (int, np.integer)) or frequency <= 0:
            raise ValueError(f"train_freq must be a positive number of steps (or (n, 'episode')), got {self.train_freq!r}.")
        if self.gradient_steps < -1:
            raise ValueError(
                f"gradient_steps must be >= 0, or -1 to follow train_ratio, got {self.gradient_steps}."
            )
        if self._stats_window_size <= 0:
            raise ValueError(f"stats_window_size must be a positive integer, got {self._stats_window_size}.")
        per_env_prefill = self.learning_starts // self.n_envs
        candidates = (per_env_prefill - self.sequence_length + 1) * self.n_envs
        if candidates < self.batch_size:
            needed = (math.ceil(self.batch_size / self.n_envs) + self.sequence_length - 1) * self.n_envs
            raise ValueError(
                f"learning_starts={self.learning_starts} random steps cannot fill a first batch of {self.batch_size} "
                f"sequences of {self.sequence_length} steps with {self.n_envs} env(s): set learning_starts >= {needed} "
                "or lower batch_size/sequence_length."
            )
        if self.buffer_size // self.n_envs < per_env_prefill:
            raise ValueError(
                f"buffer_size={self.buffer_size} is smaller than learning_starts={self.learning_starts}: "
                "the dataset must hold the random prefill."
            )
        if self.imagination_batch_size > self.batch_size * self.sequence_length:
            raise ValueError(
                f"imagination_batch_size={self.imagination_batch_size} exceeds the {self.batch_size * self.sequence_length} "
                "start states of a world-model batch (batch_size * sequence_length): lower it or raise those."
            )
        for name, value in (("gamma", self.gamma), ("gae_lambda", self.gae_lambda)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if not 0.0 <= self.discount_threshold < 1.0:
            raise ValueError(f"discount_threshold must be in [0, 1), got {self.discount_threshold}.")
        if not self.buffer_temperature > 0:
            raise ValueError(f"buffer_temperature must be > 0, got {self.buffer_temperature}.")
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"reward_transform must be one of {sorted(REWARD_TRANSFORMS)}, got {self.reward_transform!r}.")
        for name in ("ent_coef", "entropy_threshold", "pretrain_budget", "pretrain_observation_share",
                     "pretrain_dynamics_share", "pretrain_actor_critic_share"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.train_ratio is not None and not self.train_ratio > 0:
            raise ValueError(f"train_ratio must be > 0 (training steps per env step), got {self.train_ratio}.")
        if self.train_ratio is None and self.gradient_steps < 0:
            if self.buffer_size <= self.learning_starts:
                raise ValueError(
                    "train_ratio cannot be derived from the budgets when buffer_size <= learning_starts: set train_ratio."
                )
            if self.budget <= self.pretrain_budget:
                raise ValueError(f"budget={self.budget} must exceed pretrain_budget={self.pretrain_budget}.")
        unknown = set(self.world_model_kwargs) - set(DEFAULT_WORLD_MODEL_KWARGS)
        if unknown:
            raise ValueError(
                f"Unknown world_model_kwargs {sorted(unknown)}; valid keys: {sorted(DEFAULT_WORLD_MODEL_KWARGS)}."
            )
        for key in ("z_head_dims", "reward_head_dims", "discount_head_dims"):
            _check_widths(f"world_model_kwargs[{key!r}]", self.world_model_kwargs.get(key, []))
        for key in (*_OBSERVATION_MODEL_KEYS, *_LOSS_KEYS):
            value = self.world_model_kwargs.get(key, 0.0)
            if not (isinstance(value, (int, float)) and 0.0 <= value < math.inf):
                raise ValueError(f"world_model_kwargs[{key!r}] must be a finite number >= 0, got {value!r}.")
        net_arch = self.policy_kwargs.get("net_arch")
        for name, widths in (net_arch.items() if isinstance(net_arch, dict) else [("net_arch", net_arch)]):
            _check_widths(f"policy_kwargs net_arch {name!r}" if name != "net_arch" else "policy_kwargs['net_arch']", widths)
        for key in ("encoder_hidden_dims", "decoder_hidden_dims"):
            _check_widths(f"policy_kwargs[{key!r}]", self.policy_kwargs.get(key))
        if self.replay_buffer_class is not None and not issubclass(self.replay_buffer_class, TWMReplayBuffer):
            raise ValueError(
                f"replay_buffer_class must be a subclass of TWMReplayBuffer (it samples sequences), "
                f"got {self.replay_buffer_class.__name__}."
            )

    @property
    def steps_per_env_step(self) -> float:
        """Training steps per env step: ``train_ratio``, or the value the budgets imply."""
        if self.train_ratio is not None:
            return float(self.train_ratio)
        samples_per_step = (
            self.world_model_train_steps * self.batch_size * self.sequence_length
            + self.imagination_batch_size * self.imagination_horizon
        )
        training_steps = (self.budget - self.pretrain_budget) / samples_per_step
        return training_steps / (self.buffer_size - self.learning_starts)

    def _optimizer_settings(self, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        settings = {"lr": self.lr_schedule(1.0), **DEFAULT_OPTIMIZER_KWARGS[name], **overrides}
        return settings

    def _setup_model(self) -> None:
        self._check_hyperparameters()
        if self.replay_buffer_class is None:
            self.replay_buffer_class = TWMReplayBuffer
        self.replay_buffer_kwargs = {"temperature": self.buffer_temperature, **self.replay_buffer_kwargs}
        super()._setup_model()

        world_model_kwargs = {**DEFAULT_WORLD_MODEL_KWARGS, **self.world_model_kwargs}
        observation_model = ObservationModel(
            self.policy.encoder,
            self.policy.make_decoder(),
            **{new: world_model_kwargs[old] for old, new in _OBSERVATION_MODEL_KEYS.items()},
        )
        excluded = set(_OBSERVATION_MODEL_KEYS) | set(_LOSS_KEYS)
        dynamics_model = DynamicsModel(
            int(self.action_space.n),
            self.policy.latent_categoricals,
            self.policy.latent_classes,
            activation_fn=self.policy.activation_fn,
            discount_factor=self.gamma,
            **{key: value for key, value in world_model_kwargs.items() if key not in excluded},
        )
        self.world_model = WorldModel(
            observation_model.to(self.device),
            dynamics_model.to(self.device),
            self._optimizer_settings("observation", self.observation_optimizer_kwargs),
            self._optimizer_settings("dynamics", self.dynamics_optimizer_kwargs),
            discount_factor=self.gamma,
            compile_training=self.compile_world_model,
            **{key: world_model_kwargs[key] for key in _LOSS_KEYS},
        )
        self.critic = self.policy.make_critic().to(self.device)
        self.critic_target = copy.deepcopy(self.critic) if self.target_update_interval > 1 else self.critic
        if self.critic_target is not self.critic:
            self.critic_target.requires_grad_(False)
        actor_settings = self._optimizer_settings("actor", self.actor_optimizer_kwargs)
        critic_settings = self._optimizer_settings("critic", self.critic_optimizer_kwargs)
        self.actor_optimizer = make_adam(self.policy.actor.parameters(), actor_settings)
        self.critic_optimizer = make_adam(self.critic.parameters(), critic_settings)
        self._actor_max_grad_norm = actor_settings["max_grad_norm"]
        self._critic_max_grad_norm = critic_settings["max_grad_norm"]
        self._base_learning_rates = {
            optimizer: [group["lr"] for group in optimizer.param_groups] for optimizer in self._optimizers()
        }
        self._metrics: dict[str, list[th.Tensor]] = {}
        if self.mixed_precision is None:
            self._autocast_enabled = self.device.type == "cuda" and th.cuda.is_bf16_supported()
        else:
            self._autocast_enabled = bool(self.mixed_precision)
        self._warned_small_dataset = False
        # Filled by save() (the generators' states as tensors) and by load(); see _get_torch_save_params.
        self._torch_rng_state = th.empty(0, dtype=th.uint8, device=self.device)
        self._cuda_rng_states = th.empty(0, dtype=th.uint8, device=self.device)
        if self.skip_non_finite_updates:
            names = ("observation model", "dynamics model", "actor", "critic")
            for name, optimizer in zip(names, self._optimizers()):
                optimizer.register_step_pre_hook(functools.partial(self._skip_non_finite_update, name))

    def _autocast(self) -> th.autocast:
        # bf16 autocast of the training computations when mixed precision is on (a no-op context otherwise).
        return th.autocast(self.device.type, dtype=th.bfloat16, enabled=self._autocast_enabled)

    def _optimizers(self) -> list[th.optim.Optimizer]:
        return [
            self.world_model.observation_optimizer,
            self.world_model.dynamics_optimizer,
            self.actor_optimizer,
            self.critic_optimizer,
        ]

    def _skip_non_finite_update(self, name: str, optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """
        Optimiser step pre-hook: drop the step when a gradient is not finite. A NaN/inf loss gives NaN gradients (the
        global-norm clipping spreads a non-finite norm to every gradient), and Adam leaves parameters without a
        gradient untouched, weights and moments alike.
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # The one host-device synchronisation of the check (free on CPU).
        if not grads or bool(th.isfinite(nn.utils.get_total_norm(grads))):
            return
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self._skipped_updates += 1
        warnings.warn(
            f"TWM skipped an update of the {name}: its loss or gradients are not finite (NaN/inf). Its weights and "
            "optimizer state are unchanged; train/skipped_updates counts the skipped updates.",
            RuntimeWarning,
            stacklevel=1,
        )

    # ---------------------------------------------------------------- learning
    def learn(
        self: SelfTWM,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "TWM",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTWM:
        try:
            with self.training_memory():
                return super().learn(
                    total_timesteps=total_timesteps,
                    callback=callback,
                    log_interval=log_interval,
                    tb_log_name=tb_log_name,
                    reset_num_timesteps=reset_num_timesteps,
                    progress_bar=progress_bar,
                )
        finally:
            # A finished learn() has trained on all it collected (or was stopped, and then never will).
            self._clear_step_state()

    def training_memory(self) -> contextlib.AbstractContextManager[bool]:
        """
        The allocator setting ``learn()`` trains under: :func:`~sb3_twm.common.cpu_memory.reuse_freed_memory` when
        ``reuse_cpu_memory`` is on and the device is a CPU, nothing otherwise. Code that calls the training steps
        itself (the benchmarks) enters it too.

        :return: A context manager that yields whether the allocator's behaviour was changed.
        """
        return reuse_freed_memory(bool(self.reuse_cpu_memory) and self.device.type == "cpu")

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        env_will_reset = reset_num_timesteps or self._last_obs is None
        resuming = not reset_num_timesteps and self.num_timesteps > 0
        if reset_num_timesteps and self._pretrained:
            warnings.warn(
                "learn(reset_num_timesteps=True) on a TWM that has trained restarts its step counter: the next "
                f"learning_starts={self.learning_starts} steps are random actions again and training pauses for them. "
                "To continue the run, pass reset_num_timesteps=False.",
                stacklevel=4,
            )
        if resuming and env_will_reset and self.seed is not None and self.env is not None:
            # New episodes in a continued run: seed them from the run's seed and step, so that a run resumed from a
            # checkpoint and one that replaces its envs at the same step collect the same experience.
            self.env.seed(resume_seed(self.seed, self.num_timesteps))
        owed_steps, owed_total = (self._untrained_env_steps if resuming else 0), self._total_timesteps
        self._clear_step_state()
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if owed_steps > 0:
            self._train_owed_steps(owed_steps, owed_total)
        if env_will_reset and self.replay_buffer is not None and self.replay_buffer.size() > 0:
            # The stored experience and the fresh episodes are not one trajectory.
            self.replay_buffer.mark_episode_boundary()
        if result[0] <= self.learning_starts:
            warnings.warn(
                f"learn() ends at step {result[0]}, not past learning_starts={self.learning_starts}: this call only "
                "collects random-action steps and does not train.",
                stacklevel=4,
            )
        return result

    def _clear_step_state(self) -> None:
        # No step is stored ahead of collect_rollouts and none is owed training: the state between learn() calls.
        self._untrained_env_steps, self._step_committed, self._pending_episodes = 0, False, 0

    def _train_owed_steps(self, env_steps: int, total_timesteps: int) -> None:
        """
        Make the training call that a checkpoint saved during a rollout (by a callback) came before: the run that
        saved it made this call right after that rollout, with the RNG states the checkpoint holds.

        :param env_steps: Env steps of that rollout.
        :param total_timesteps: The total of the ``learn()`` call that was running (for the progress).
        """
        if self.num_timesteps > 0 and self.num_timesteps > self.learning_starts:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            gradient_steps = self.gradient_steps if self.gradient_steps >= 0 else env_steps
            if gradient_steps > 0:
                self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if callback is not None and not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        first = [_StoreStepFirst()] + ([callback] if callback is not None else [])
        return super()._init_callback(CallbackList(first), progress_bar)

    def _commit_step(self, step_locals: dict[str, Any]) -> None:
        """
        Store the step ``collect_rollouts`` just took (what it does after the callbacks), before the callbacks.

        :param step_locals: ``collect_rollouts``' local variables.
        """
        rewards, dones, infos, new_obs = (step_locals[key] for key in ("rewards", "dones", "infos", "new_obs"))
        self._check_transition(rewards, new_obs)
        super()._update_info_buffer(infos, dones)
        super()._store_transition(step_locals["replay_buffer"], step_locals["buffer_actions"], new_obs, rewards, dones, infos)
        self._step_committed = True
        self._pending_episodes = int(np.sum(dones))
        self._untrained_env_steps = int(step_locals["num_collected_steps"]) * self.n_envs

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        if not self._step_committed:
            super()._update_info_buffer(infos, dones)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if self._step_committed:
            self._step_committed, self._pending_episodes = False, 0
            return
        self._check_transition(reward, new_obs)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _check_transition(self, rewards: np.ndarray, new_obs: Any) -> None:
        # Refused before it is stored: one NaN reward in the dataset would poison every batch that draws it.
        rewards = np.asarray(rewards)
        if not np.all(np.isfinite(rewards)):
            env_index = int(np.flatnonzero(~np.isfinite(rewards.reshape(-1)))[0])
            raise ValueError(
                f"The env returned a non-finite reward ({rewards.reshape(-1)[env_index]}) at step {self.num_timesteps} "
                f"(env {env_index}). TWM cannot learn from NaN/inf rewards: fix the env or clip its rewards "
                "(e.g. gymnasium.wrappers.TransformReward)."
            )
        observations = np.asarray(new_obs)
        if observations.dtype.kind == "f" and not np.all(np.isfinite(observations)):
            env_index = int(np.flatnonzero((~np.isfinite(observations.reshape(len(observations), -1))).any(axis=1))[0])
            raise ValueError(
                f"The env returned a non-finite observation at step {self.num_timesteps} (env {env_index}). "
                "TWM cannot learn from NaN/inf observations: fix the env."
            )

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """
        Pretrain once after the prefill, then run training steps at the configured cadence.

        :param gradient_steps: Training steps to run, or, with ``self.gradient_steps == -1``, the env steps just
            collected (converted with ``train_ratio``).
        :param batch_size: Sequences per world-model update.
        """
        # The rollout's steps are being trained on: a checkpoint saved from here on owes no training.
        self._untrained_env_steps = 0
        if not self._dataset_ready(batch_size):
            return
        if not self._pretrained:
            with self._autocast():
                self._pretrain()
            self._pretrained = True
        if self.gradient_steps >= 0:
            num_steps = gradient_steps
        else:
            self._train_credit += self.steps_per_env_step * gradient_steps
            num_steps = int(self._train_credit)
            self._train_credit -= num_steps
        if num_steps == 0:
            return
        self._update_learning_rates()
        with self._autocast():
            for _ in range(num_steps):
                self._train_step(batch_size)
        self._n_updates += num_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/skipped_updates", self._skipped_updates)

    def _dataset_ready(self, batch_size: int) -> bool:
        # A model loaded without its dataset (load_replay_buffer) first collects enough fresh steps for one batch.
        stored_per_env = self.replay_buffer.size()
        if (stored_per_env - self.sequence_length + 1) * self.n_envs >= batch_size:
            return True
        if not self._warned_small_dataset:
            warnings.warn(
                f"TWM's dataset holds {stored_per_env * self.n_envs} steps, too few for a batch of {batch_size} "
                f"sequences of {self.sequence_length} steps: training waits until enough steps are collected. "
                "To continue a run where it stopped, load its dataset with model.load_replay_buffer(path).",
                stacklevel=2,
            )
            self._warned_small_dataset = True
        return False

    def _update_learning_rates(self) -> None:
        # Every optimiser follows the schedule in proportion, so a constant learning_rate leaves them unchanged.
        initial = self.lr_schedule(1.0)
        scale = self.lr_schedule(self._current_progress_remaining) / initial if initial > 0 else 0.0
        self.logger.record("train/learning_rate", self.lr_schedule(self._current_progress_remaining))
        for optimizer, base_rates in self._base_learning_rates.items():
            for group, base_rate in zip(optimizer.param_groups, base_rates):
                group["lr"] = base_rate * scale

    def _to_torch(self, batch: SequenceBatch) -> WorldModelBatch:
        rewards = batch.rewards
        if self._vec_normalize_env is not None:
            rewards = self._vec_normalize_env.normalize_reward(rewards)  # identity unless norm_reward=True
        rewards = th.as_tensor(rewards, device=self.device, dtype=th.float32)
        return WorldModelBatch(
            self._to_float(batch.observations),
            th.as_tensor(batch.actions, device=self.device, dtype=th.long),
            REWARD_TRANSFORMS[self.reward_transform](rewards),
            th.as_tensor(batch.terminated, device=self.device),
            th.as_tensor(batch.truncated, device=self.device),
        )

    def _observations_to_latents(self, observations: np.ndarray, temperature: float = 1.0) -> th.Tensor:
        # observations: (N, *obs_shape) raw -> (N, K*C) sampled latents
        return self.policy.encoder.latent(self._to_float(observations), temperature)

    def _train_step(self, batch_size: int) -> None:
        self.world_model.train()
        skipped_updates = self._skipped_updates
        for _ in range(self.world_model_train_steps):
            batch = self._to_torch(self.replay_buffer.sample_sequences(batch_size, self.sequence_length))
            output, terms = self.world_model.train_step(batch)
            self._record("world_model", terms)
        if self._skipped_updates > skipped_updates:
            # A world-model update was skipped as non-finite: its latents are no start for imagination either.
            return
        trajectories = self._imagine(output)
        self._train_actor_critic(trajectories)

    def _imagine(self, output: WorldModelOutput) -> ImaginedTrajectories:
        # Starts are windows (z_j, z_{j+1}) of the world-model batch: one real context step, then imagination.
        num_sequences, num_steps = output.actions.shape[0], output.actions.shape[1] - 1
        chosen = th.randperm(num_sequences * num_steps, device=self.device)[: self.imagination_batch_size]
        sequence, step = chosen // num_steps, chosen % num_steps

        def restart(count: int) -> th.Tensor:
            return self._observations_to_latents(self.replay_buffer.sample_observations(count))

        trajectories = imagine(
            self.world_model.dynamics_model,
            output.z[sequence, step],
            output.actions[sequence, step],
            output.rewards[sequence, step],
            output.dones[sequence, step],
            output.z[sequence, step + 1],
            self.policy.sample_actions,
            self.imagination_horizon,
            self.discount_threshold,
            restart,
        )
        self._record(
            "imagination",
            {
                "reward": trajectories.rewards.mean(),
                "discount": trajectories.discounts.mean(),
                "restart_fraction": trajectories.dones.float().mean(),
            },
        )
        return trajectories

    def _train_actor_critic(self, trajectories: ImaginedTrajectories) -> None:
        weights = trajectories.weights[:, :-1]
        self._actor_critic_update(
            trajectories.z, trajectories.actions, trajectories.rewards, trajectories.discounts, trajectories.dones, weights
        )

    def _actor_critic_update(
        self,
        z: th.Tensor,
        actions: th.Tensor | None,
        rewards: th.Tensor,
        discounts: th.Tensor,
        dones: th.Tensor,
        weights: th.Tensor,
    ) -> None:
        # z: (N, H+1, K*C); actions, rewards, discounts, dones, weights: (N, H)
        # actions None: pretraining, where the actor only maximises its entropy.
        with th.no_grad():
            values = self.critic_target(z).squeeze(-1).float()  # (N, H+1), float32 also under autocast
        advantages, returns = lambda_returns(rewards, values, discounts, dones, self.gae_lambda)
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        value_loss = critic_loss(self.critic(z[:, :-1]).squeeze(-1), returns, weights)
        critic_grad_norm = optimizer_step(self.critic_optimizer, value_loss, self._critic_max_grad_norm)

        logits = self.policy.action_logits(z[:, :-1])
        if actions is None:
            entropy = self.policy.normalized_entropy(logits).mean()
            policy_loss, terms = -self.ent_coef * entropy, {"entropy": entropy}
        else:
            policy_loss, terms = actor_loss(logits, actions, advantages, weights, self.ent_coef, self.entropy_threshold)
        actor_grad_norm = optimizer_step(self.actor_optimizer, policy_loss, self._actor_max_grad_norm)

        self._actor_critic_updates += 1
        if self.critic_target is not self.critic and self._actor_critic_updates % self.target_update_interval == 0:
            self.critic_target.load_state_dict(self.critic.state_dict())
        self._record(
            "actor_critic" if actions is not None else "pretrain_actor_critic",
            {
                "critic_loss": value_loss.detach(),
                "actor_loss": policy_loss.detach(),
                "value": values.mean(),
                "return": returns[:, 0].mean(),
                "advantage": advantages.mean(),
                "critic_grad_norm": critic_grad_norm,
                "actor_grad_norm": actor_grad_norm,
                **{key: value.detach() for key, value in terms.items()},
            },
        )

    # ------------------------------------------------------------- pretraining
    def _pretrain(self) -> None:
        """
        The reference's one-off pretraining on the prefill data: observation model on single frames, then the
        dynamics model on sequences of the (now fixed) encoder's latents, then the actor-critic on real latent
        sequences (critic on lambda-returns, actor maximising its entropy).
        """
        if self.pretrain_budget <= 0:
            return
        self.world_model.train()
        frames_per_batch = self.batch_size * self.sequence_length
        observations = self.replay_buffer.all_observations()

        budget = self.pretrain_observation_share * self.pretrain_budget
        updates = 0
        while budget > 0:
            permutation = np.random.permutation(len(observations))  # one epoch of single frames
            for start in range(0, len(observations), frames_per_batch):
                indices = permutation[start : start + frames_per_batch]
                features = self._to_float(observations[np.sort(indices)])
                self._record("pretrain_world_model", self.world_model.pretrain_observation_step(features))
                budget -= len(indices)
                updates += 1
                if budget <= 0:
                    break
        self._log_pretraining("observation model", updates)

        budget, updates = self.pretrain_dynamics_share * self.pretrain_budget, 0
        while budget > 0:
            for batch in self.replay_buffer.uniform_sequence_batches(self.sequence_length, self.batch_size):
                tensors = self._to_torch(batch)
                with th.no_grad():
                    logits = self.policy.encoder(tensors.observations)
                terms = self.world_model.pretrain_dynamics_step(
                    logits, tensors.actions, tensors.rewards, tensors.terminated, tensors.truncated
                )
                self._record("pretrain_world_model", terms)
                budget -= batch.actions.shape[0] * self.sequence_length
                updates += 1
                if budget <= 0:
                    break
        self._log_pretraining("dynamics model", updates)

        budget, updates = self.pretrain_actor_critic_share * self.pretrain_budget, 0
        horizon = self.imagination_horizon
        while budget > 0:
            for batch in self.replay_buffer.uniform_sequence_batches(horizon, self.imagination_batch_size):
                tensors = self._to_torch(batch)
                with th.no_grad():
                    z = self.policy.encoder.latent(tensors.observations[:, 1:], temperature=1.0)  # (N, H+1, K*C)
                dones = (tensors.terminated | tensors.truncated)[:, 1:]
                discounts = self.gamma * (~dones).float()
                self._actor_critic_update(
                    z, None, tensors.rewards[:, 1:], discounts, th.zeros_like(dones), th.ones_like(discounts)
                )
                budget -= batch.actions.shape[0] * horizon
                updates += 1
                if budget <= 0:
                    break
        self._log_pretraining("actor-critic", updates)

    def _to_float(self, observations: np.ndarray) -> th.Tensor:
        # observations: (..., *obs_shape) as stored -> network features
        # The dataset keeps the env's original observations (as SB3's replay buffers do) while the policy acts on
        # what a VecNormalize wrapper hands it: normalise with the current statistics so that the world model and the
        # actor see the same inputs.
        if self._vec_normalize_env is not None:
            observations = self._vec_normalize_env.normalize_obs(observations).astype(np.float32, copy=False)
        tensor = th.as_tensor(observations, device=self.device)
        return preprocess_obs(tensor, self.observation_space, self.policy.normalize_images).float()

    def _log_pretraining(self, part: str, updates: int) -> None:
        self.logger.record(f"pretrain/{part.replace(' ', '_').replace('-', '_')}_updates", updates)
        if self.verbose >= 1:
            print(f"TWM pretraining: {updates} {part} updates")

    # ----------------------------------------------------------------- logging
    def _record(self, prefix: str, terms: dict[str, th.Tensor]) -> None:
        # Kept as tensors and averaged when the logs are written, so training never waits on the device.
        for key, value in terms.items():
            self._metrics.setdefault(f"{prefix}/{key}", []).append(value.detach().float())

    def dump_logs(self) -> None:
        """Write the averaged training metrics, then SB3's rollout and time statistics."""
        for key, values in self._metrics.items():
            self.logger.record(f"train/{key}" if not key.startswith("pretrain") else key, th.stack(values).mean().item())
        self._metrics = {}
        self.logger.record("train/skipped_updates", self._skipped_updates)
        super().dump_logs()

    # --------------------------------------------------------------- save/load
    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "critic_target",
            "_metrics",
            "_base_learning_rates",
            "_warned_small_dataset",
            "_autocast_enabled",
            # Rebuilt from learning_rate by _setup_model.
            "lr_schedule",
            # The env is reset on resume (its state cannot be saved), so the last observations are not needed.
            "_last_obs",
            "_last_original_obs",
            "_last_episode_starts",
            "_step_committed",
            "_pending_episodes",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = [
            "policy",
            "world_model",
            "critic",
            "world_model.observation_optimizer",
            "world_model.dynamics_optimizer",
            "actor_optimizer",
            "critic_optimizer",
        ]
        if self.critic_target is not self.critic:
            state_dicts.append("critic_target")
        return state_dicts, ["_torch_rng_state", "_cuda_rng_states"]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: list[str] | None = None,
        include: list[str] | None = None,
    ) -> None:
        """
        Save the model in SB3's zip layout, atomically (temporary file renamed over ``path``), with the state an
        exact resume needs (counters, schedule phase, random generators; see the class docstring) and without any
        pickled data: every attribute is stored as plain JSON. The dataset is saved by ``save_replay_buffer``.

        :param path: File (``.zip`` is appended when it has no suffix) or binary file object.
        :param exclude: Attributes not to save, besides the default ones.
        :param include: Attributes to save even though excluded by default.
        """
        data = self.__dict__.copy()
        excluded = set(exclude or []).union(self._excluded_save_params())
        if include is not None:
            excluded = excluded.difference(include)
        state_dict_names, torch_variable_names = self._get_torch_save_params()
        excluded.update(name.split(".")[0] for name in state_dict_names + torch_variable_names)
        for name in excluded:
            data.pop(name, None)
        if self._step_committed:
            # Saved by a callback right after the step was stored: count the episodes it ended, as the rollout will.
            data["_episode_num"] = self._episode_num + self._pending_episodes
        rng_state, rng_tensors = capture_rng_state(self.action_space)
        data["_checkpoint"] = {"version": CHECKPOINT_FORMAT_VERSION, "rng": rng_state}
        self._torch_rng_state, self._cuda_rng_states = rng_tensors["torch"], rng_tensors["cuda"]
        encoded = {key: encode_value(value) for key, value in data.items()}
        unsaved = sorted(key for key, value in encoded.items() if is_unsaved(value))
        if unsaved:
            warnings.warn(
                f"TWM.save could not store {unsaved} as data (code or unknown objects; checkpoints never hold pickled "
                "objects). Constructor arguments among them must be given to TWM.load again (e.g. "
                f"custom_objects={{'{unsaved[0]}': ...}}); other attributes are not restored.",
                stacklevel=2,
            )
        pytorch_variables = {name: recursive_getattr(self, name) for name in torch_variable_names}
        with open_for_writing(path, "zip") as file:
            save_to_zip_file(file, data=encoded, params=self.get_parameters(), pytorch_variables=pytorch_variables)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfTWM],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfTWM:
        """
        Load a model saved by ``save``, restoring its random generators (see the class docstring), without
        unpickling anything: the data is plain JSON and the tensors are loaded with ``weights_only=True``. A
        truncated, corrupted or foreign file, or an env that does not match the model (observation shape, frame
        stack, number of actions), raises a ``ValueError`` naming the file; the process' random generators are then
        left as they were.

        :param path: The zip file (``.zip`` is tried when the path has no suffix) or a seekable binary file object.
        :param env: The env to train on (optional for prediction); the envs are reset before training.
        :param device: Device.
        :param custom_objects: Attributes to use instead of the saved ones (needed for what a checkpoint cannot
            hold, e.g. a callable ``learning_rate``).
        :param print_system_info: Print the saved and the current system info.
        :param force_reset: Kept for SB3 compatibility: TWM does not save the last observations, so the envs are
            always reset before training.
        :param kwargs: Attributes to change (e.g. hyperparameters).
        :return: The model.
        """
        path = existing_path(path, "zip")
        name = display_name(path)
        process_rng = capture_rng_state()
        try:
            raw = read_zip_json(path)
            objects = cls._decode_saved_data(name, raw, supplied={**kwargs, **(custom_objects or {})})
            dropped = objects.pop(_DROPPED, [])
            if env is not None and not isinstance(env, str):
                env = cls._wrap_env(env, int(raw.get("verbose", 0)))
                cls._check_env_matches(name, objects, env)
            model = super().load(
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
            model._restore_checkpoint()
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

    @classmethod
    def _decode_saved_data(cls, name: str, raw: dict[str, Any], supplied: dict[str, Any]) -> dict[str, Any]:
        """
        Decode every saved attribute (SB3 then takes them as ``custom_objects``, so it never unpickles one).

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
            warnings.warn(f"{name}: the attributes {dropped} cannot be restored from the file and are left out.", stacklevel=3)
            objects[_DROPPED] = dropped
        if refused:
            raise CheckpointError(
                f"{name} holds pickled attributes {refused} (written by SB3's cloudpickle, e.g. by another algorithm "
                "or an older sb3-twm). TWM never unpickles checkpoint data: pass these in custom_objects if you "
                "trust the file's origin and know their values."
            )
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
        return objects

    @staticmethod
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

    def _restore_checkpoint(self) -> None:
        """Put the random generators in the state save() captured (last: building the model drew from them)."""
        checkpoint = self.__dict__.pop("_checkpoint", None)
        if checkpoint is None:
            return
        tensors = {"torch": self._torch_rng_state, "cuda": self._cuda_rng_states}
        check_rng_state(checkpoint.get("rng"), tensors)
        restore_rng_state(checkpoint["rng"], tensors, self.action_space)

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save the dataset as an ``.npz`` of plain arrays (no pickle), atomically: observations, actions, rewards,
        terminated and truncated flags and visit counts of the stored steps, the latest next observations, and
        a JSON ``metadata`` entry (format version, spaces, ``n_envs``, capacity, ring position, ``num_timesteps``).
        The content is ``.npz`` whatever the name (``CheckpointCallback`` and rl-zoo3 name it ``.pkl``).

        :param path: File (``.npz`` is appended when it has no suffix) or binary file object.
        """
        assert self.replay_buffer is not None, "The replay buffer is not defined"
        buffer = self.replay_buffer
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
            "num_timesteps": self.num_timesteps,
        }
        with open_for_writing(path, "npz") as file:
            write_npz(file, metadata, _dataset_arrays(buffer, buffer.size()))

    def load_replay_buffer(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        truncate_last_traj: bool = True,
    ) -> None:
        """
        Load a dataset saved by ``save_replay_buffer``. It is read into a new buffer and checked (format, spaces,
        ``n_envs``, capacity, array shapes and dtypes, CRCs, action range, finite rewards and visit counts) before
        it replaces the model's: a truncated, corrupted, foreign or mismatching file raises a ``ValueError`` naming
        the file and leaves the model's dataset as it was. Nothing is unpickled.

        :param path: The file (``.npz`` is tried when the path has no suffix) or a binary file object.
        :param truncate_last_traj: Kept for SB3 compatibility (HER only); the next ``learn()`` with a reset env marks
            an episode boundary anyway.
        """
        path = existing_path(path, "npz")
        name = display_name(path)
        buffer = self.replay_buffer_class(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            optimize_memory_usage=self.optimize_memory_usage,
            **self.replay_buffer_kwargs,
        )
        metadata = read_npz_into(path, functools.partial(self._dataset_destinations, buffer))
        buffer.pos, buffer.full = int(metadata["pos"]), bool(metadata["full"])
        self._check_dataset_content(name, buffer)
        buffer.device = self.device  # as SB3's load_replay_buffer: the model's device, whatever the buffer resolved
        saved_at = metadata.get("num_timesteps")
        if self.num_timesteps > 0 and saved_at != self.num_timesteps:
            warnings.warn(
                f"The dataset {name} was saved at step {saved_at}, the model is at step {self.num_timesteps}: "
                "they are not from the same checkpoint, so training will not continue exactly.",
                stacklevel=2,
            )
        self.replay_buffer = buffer

    def _dataset_destinations(self, buffer: TWMReplayBuffer, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
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
            raise CheckpointError(
                f"the dataset's observations are {observation_space}, the model's {buffer.observation_space}"
            )
        action_space = decode_value(metadata["action_space"])
        if action_space != buffer.action_space:
            raise CheckpointError(f"the dataset's actions are {action_space}, the model's {buffer.action_space}")
        pos, full = metadata["pos"], metadata["full"]
        if not (isinstance(pos, int) and isinstance(full, bool) and 0 <= pos < buffer.buffer_size):
            raise CheckpointError(f"the ring position pos={pos!r}, full={full!r} is invalid")
        return _dataset_arrays(buffer, buffer.buffer_size if full else pos)

    @staticmethod
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


_DATASET_ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "visits")
# Saved attributes a model cannot be rebuilt without, besides its constructor's parameters.
_REQUIRED_ATTRIBUTES = {"policy_class", "observation_space", "action_space", "replay_buffer_class", "train_freq", "n_envs"}
# Key under which _decode_saved_data returns the attributes to leave out.
_DROPPED = "_twm_dropped_attributes"


def _dataset_arrays(buffer: TWMReplayBuffer, stored: int) -> dict[str, np.ndarray]:
    # The arrays of a dataset file: views of the first `stored` time steps, and the latest next observations.
    return {
        **{name: getattr(buffer, name)[:stored] for name in _DATASET_ARRAYS},
        "latest_next_observations": buffer.latest_next_observations,
    }
