"""TWM: Transformer-based World Models (Robine et al., ICLR 2023) as a Stable-Baselines3 off-policy algorithm."""

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import update_learning_rate

from sb3_twm.common.buffers import SequenceBatch, TWMReplayBuffer
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

    :param policy: ``"CnnPolicy"`` (stacked image frames) or ``"MlpPolicy"`` (vector observations), or a class.
    :param env: The environment (Gym env, VecEnv or registered id).
    :param learning_rate: Learning rate of the observation model, dynamics model and actor (spec: ``obs_lr``,
        ``dyn_lr``, ``actor_lr``), a float or a schedule of the remaining progress. A schedule scales every
        optimiser (the critic's too) by ``schedule(progress) / schedule(1)``.
    :param buffer_size: Env steps kept in the dataset (``buffer_capacity``).
    :param learning_starts: Random-action steps before any training (``buffer_prefill``).
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
    :param target_update_interval: Actor-critic updates between copies of the critic into its target network;
        1 means no separate target (the critic bootstraps itself).
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
        if not isinstance(self.action_space, spaces.Discrete):
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
        self.world_model_kwargs = world_model_kwargs or {}
        self.observation_optimizer_kwargs = observation_optimizer_kwargs or {}
        self.dynamics_optimizer_kwargs = dynamics_optimizer_kwargs or {}
        self.actor_optimizer_kwargs = actor_optimizer_kwargs or {}
        self.critic_optimizer_kwargs = critic_optimizer_kwargs or {}
        # Training state that save() keeps (plain attributes).
        self._pretrained = False
        self._train_credit = 0.0
        self._actor_critic_updates = 0
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
        self._warned_small_dataset = False

    def _optimizers(self) -> list[th.optim.Optimizer]:
        return [
            self.world_model.observation_optimizer,
            self.world_model.dynamics_optimizer,
            self.actor_optimizer,
            self.critic_optimizer,
        ]

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
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        env_will_reset = reset_num_timesteps or self._last_obs is None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if env_will_reset and self.replay_buffer is not None and self.replay_buffer.size() > 0:
            # The stored experience and the fresh episodes are not one trajectory.
            self.replay_buffer.mark_episode_boundary()
        return result

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """
        Pretrain once after the prefill, then run training steps at the configured cadence.

        :param gradient_steps: Training steps to run, or, with ``self.gradient_steps == -1``, the env steps just
            collected (converted with ``train_ratio``).
        :param batch_size: Sequences per world-model update.
        """
        if not self._dataset_ready(batch_size):
            return
        if not self._pretrained:
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
        for _ in range(num_steps):
            self._train_step(batch_size)
        self._n_updates += num_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

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
        scale = self.lr_schedule(self._current_progress_remaining) / self.lr_schedule(1.0)
        self.logger.record("train/learning_rate", self.lr_schedule(self._current_progress_remaining))
        for optimizer, base_rates in self._base_learning_rates.items():
            for group, base_rate in zip(optimizer.param_groups, base_rates):
                group["lr"] = base_rate * scale

    def _to_torch(self, batch: SequenceBatch) -> WorldModelBatch:
        observations = th.as_tensor(batch.observations, device=self.device)
        rewards = th.as_tensor(batch.rewards, device=self.device, dtype=th.float32)
        return WorldModelBatch(
            preprocess_obs(observations, self.observation_space, self.policy.normalize_images).float(),
            th.as_tensor(batch.actions, device=self.device, dtype=th.long),
            REWARD_TRANSFORMS[self.reward_transform](rewards),
            th.as_tensor(batch.terminated, device=self.device),
            th.as_tensor(batch.truncated, device=self.device),
        )

    def _observations_to_latents(self, observations: np.ndarray, temperature: float = 1.0) -> th.Tensor:
        # observations: (N, *obs_shape) raw -> (N, K*C) sampled latents
        tensor = th.as_tensor(observations, device=self.device)
        features = preprocess_obs(tensor, self.observation_space, self.policy.normalize_images).float()
        return self.policy.encoder.latent(features, temperature)

    def _train_step(self, batch_size: int) -> None:
        self.world_model.train()
        for _ in range(self.world_model_train_steps):
            batch = self._to_torch(self.replay_buffer.sample_sequences(batch_size, self.sequence_length))
            output, terms = self.world_model.train_step(batch)
            self._record("world_model", terms)
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
            values = self.critic_target(z).squeeze(-1)  # (N, H+1)
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
            for start in range(0, len(observations), frames_per_batch):
                indices = np.random.permutation(len(observations))[start : start + frames_per_batch]
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
        super().dump_logs()

    # --------------------------------------------------------------- save/load
    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "critic_target",
            "_metrics",
            "_base_learning_rates",
            "_warned_small_dataset",
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
        return state_dicts, []
