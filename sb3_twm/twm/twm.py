"""TWM: Transformer-based World Models (Robine et al., ICLR 2023) as a Stable-Baselines3 off-policy algorithm."""

import contextlib
import functools
import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecNormalize

from sb3_twm.common.atari import is_atari_id, make_twm_atari_env
from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checks import check_action_space, check_frame_stack, check_policy_observations
from sb3_twm.common.cpu_memory import reuse_freed_memory
from sb3_twm.common.metrics import Metrics
from sb3_twm.common.off_policy_algorithm import ResumableOffPolicyAlgorithm
from sb3_twm.common.optim import BaseLearningRates
from sb3_twm.common.progress import TWMProgressBarCallback
from sb3_twm.common.type_aliases import ImaginedTrajectories, Update, WorldModelOutput, WorldModelUpdate
from sb3_twm.twm import checkpointing, dataset_files
from sb3_twm.twm.actor_critic import ActorCritic
from sb3_twm.twm.dreaming import DREAM_CONTEXT, DREAM_SEQUENCES, DREAM_STEPS, dream_from_dataset, log_dream
from sb3_twm.twm.hyperparameters import check_hyperparameters, training_steps_per_env_step
from sb3_twm.twm.policies import CnnPolicy, MlpPolicy, TWMPolicy
from sb3_twm.twm.pretraining import pretrain
from sb3_twm.world_model import Dream, Encoder, WorldModel, imagine, select_starts

SelfTWM = TypeVar("SelfTWM", bound="TWM")


def _fresh_latents(encoder: Encoder, buffer: TWMReplayBuffer, env: VecNormalize | None, count: int) -> th.Tensor:
    # Where imagination restarts: random stored observations, encoded with sampling (temperature 1).
    return encoder.latent(buffer.sample_observation_features(count, env), temperature=1.0)


class TWM(ResumableOffPolicyAlgorithm):
    """
    Transformer-based World Model (TWM).

    Paper: "Transformer-based World Models Are Happy With 100k Interactions", Robine et al., ICLR 2023,
    https://arxiv.org/abs/2303.07109. Authors' code: https://github.com/jrobine/twm (the defaults are its).

    TWM learns a world model of the environment (a CNN observation model to a discrete latent z and a Transformer-XL
    dynamics model over z, action and reward tokens) and trains an actor-critic only on rollouts imagined by it.
    Acting needs only the encoder and the actor. Training: ``learning_starts`` steps of random actions, a one-off
    pretraining on them (no callbacks fire during it), then ``train_ratio`` training steps per env step, each
    ``world_model_train_steps`` world-model updates and one actor-critic update in imagination. ``save`` and
    ``save_replay_buffer`` write checkpoints that resume exactly and are never unpickled
    (:mod:`sb3_twm.twm.checkpointing`).

    :param policy: ``"CnnPolicy"`` (stacked image frames) or ``"MlpPolicy"`` (vector observations), or a class.
    :param env: The environment (Gym env, VecEnv or registered id), with ``Discrete`` actions (the paper's) or ``Box``
        actions with finite bounds, which the actor quantises (``action_bins`` values per dimension in
        ``policy_kwargs``, see :mod:`sb3_twm.common.actions`) and the dynamics model embeds as vectors.
    :param learning_rate: Learning rate of the observation model, dynamics model and actor (``obs_lr``, ``dyn_lr``,
        ``actor_lr``), or a schedule, which scales every optimiser (the critic's too) by its value over its start.
    :param buffer_size: Env steps kept in the dataset (``buffer_capacity``).
    :param learning_starts: Random-action steps before any training (``buffer_prefill``).
    :param batch_size: Sequences per world-model update (``wm_batch_size``).
    :param sequence_length: Steps per world-model sequence (``wm_sequence_length``).
    :param gamma: Discount factor; the discount target is ``gamma * (1 - terminated)``.
    :param gae_lambda: Lambda of the lambda-returns (``env_discount_lambda``).
    :param train_freq: Collect this many steps between training calls (SB3 meaning).
    :param gradient_steps: Training steps per training call; -1 follows ``train_ratio`` training steps per env step,
        with the fraction carried over.
    :param train_ratio: Training steps per env step; None derives it from the budgets as the reference does (1.316
        by default, :func:`~sb3_twm.twm.hyperparameters.training_steps_per_env_step`).
    :param budget: Sampled steps spent on training over the whole run, pretraining included.
    :param pretrain_budget: Sampled steps spent on the one-off pretraining after ``learning_starts`` (0 skips it).
    :param pretrain_observation_share: Share of ``pretrain_budget`` for the observation model (single frames).
    :param pretrain_dynamics_share: Share for the dynamics model.
    :param pretrain_actor_critic_share: Share for the actor-critic on real latents (the default reproduces the
        reference, which computes ``1 - obs + dyn``; ``1 - (obs + dyn)`` would be the paper's reading).
    :param world_model_train_steps: World-model updates per training step (``wm_train_steps``).
    :param imagination_batch_size: Imagined rollouts per actor-critic update (``ac_batch_size``).
    :param imagination_horizon: Imagined steps per rollout (``ac_horizon``).
    :param discount_threshold: A rollout restarts when its cumulative predicted discount drops below this
        (``wm_discount_threshold``).
    :param buffer_temperature: Temperature of the recency-balanced sampling of sequence starts.
    :param reward_transform: Applied to rewards used for training: ``"tanh"`` (paper), ``"sign"`` or ``"none"``.
    :param reward_scale: Multiplies rewards used for training before ``reward_transform`` (1: the paper's): brings
        rewards of other scales into tanh's range (Pendulum's reach -16 per step).
    :param ent_coef: Weight of the actor's thresholded entropy loss (``actor_entropy_coef``).
    :param entropy_threshold: Normalised policy entropy below which that loss is active (``actor_entropy_threshold``).
    :param normalize_advantage: Normalise advantages per batch (``ac_normalize_advantages``).
    :param target_update_interval: Actor-critic updates between copies of the critic into its target network;
        1 means no separate target (the critic bootstraps itself).
    :param mixed_precision: Train under bf16 autocast (losses, returns and optimiser states stay float32). None: on
        for CUDA devices with bf16, off on CPU (exact float32); True on a CPU with AMX is faster but not bit-identical.
    :param compile_world_model: ``torch.compile`` the world-model update (forward and backward, see ``WorldModel``):
        the same computation up to rounding, with the compiler's random draws; the first updates pay the compilation.
    :param reuse_cpu_memory: While ``learn()`` runs on a CPU (Linux, glibc), keep memory freed by one update for the
        next (:func:`~sb3_twm.common.cpu_memory.reuse_freed_memory`): no page faults; nothing computed changes.
    :param skip_non_finite_updates: Skip an optimiser step whose gradients are not finite (NaN/inf loss), with a
        ``RuntimeWarning``, counted in ``train/skipped_updates``; costs one device sync per optimiser step.
    :param log_dream_interval: Every this many training steps, log a dream of the newest sequences through the logger
        (``dream/frames``: real | reconstruction | world model, 8 real steps then 24 of the dynamics model alone;
        ``dream/rewards_discounts``; ``dream/features`` for vectors; see :mod:`sb3_twm.twm.dreaming`); 0 (default): never.
        Nothing of the run changes (random generators and visit counts are left as they were).
    :param world_model_kwargs: Dynamics-model architecture and world-model loss weights: the keyword arguments of
        ``ObservationModel``, ``DynamicsModel`` and ``WorldModel`` (``sb3_twm.world_model.world_model_defaults()``
        lists every key with its default).
    :param observation_optimizer_kwargs: Adam settings of the observation model: ``lr`` (default: ``learning_rate``),
        ``eps``, ``weight_decay``, ``max_grad_norm``, ``betas`` (defaults: ``world_model.OPTIMIZER_DEFAULTS``).
    :param dynamics_optimizer_kwargs: Same for the dynamics model.
    :param actor_optimizer_kwargs: Same for the actor (defaults: ``actor_critic.ACTOR_OPTIMIZER_DEFAULTS``).
    :param critic_optimizer_kwargs: Same for the critic, ``lr`` included (``actor_critic.CRITIC_OPTIMIZER_DEFAULTS``).
    :param replay_buffer_class: Dataset class, a subclass of ``TWMReplayBuffer`` (the default).
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
    actor_critic: ActorCritic

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
        reward_scale: float = 1.0,
        ent_coef: float = 0.01,
        entropy_threshold: float = 0.1,
        normalize_advantage: bool = False,
        target_update_interval: int = 1,
        mixed_precision: bool | None = None,
        compile_world_model: bool = False,
        reuse_cpu_memory: bool = True,
        skip_non_finite_updates: bool = True,
        log_dream_interval: int = 0,
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
        env = _make_atari_env_from_id(policy, env, seed, verbose)
        check_policy_observations(policy, getattr(env, "observation_space", None))
        if hasattr(env, "action_space"):
            check_action_space(env.action_space)  # before SB3's assertion on unbounded Box actions, which says less
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
        if env is not None:
            check_action_space(self.action_space)
            check_frame_stack(policy, self.observation_space)
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
        self.reward_scale = reward_scale
        self.ent_coef = ent_coef
        self.entropy_threshold = entropy_threshold
        self.normalize_advantage = normalize_advantage
        self.target_update_interval = target_update_interval
        self.mixed_precision = mixed_precision
        self.compile_world_model = compile_world_model
        self.reuse_cpu_memory = reuse_cpu_memory
        self.skip_non_finite_updates = skip_non_finite_updates
        self.log_dream_interval = log_dream_interval
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
        self._untrained_env_steps = 0  # see ResumableOffPolicyAlgorithm
        self._progress_bar: TWMProgressBarCallback | None = None  # while learn(progress_bar=True) runs
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        check_hyperparameters(self)
        if self.replay_buffer_class is None:
            self.replay_buffer_class = TWMReplayBuffer
        if self.replay_buffer is None:
            self.replay_buffer = self._make_replay_buffer()
        super()._setup_model()
        world_model_optimizer = {"lr": self.lr_schedule(1.0)}
        self.world_model = WorldModel.build(
            self.policy.encoder,
            self.policy.make_decoder(),
            self.policy.action_distribution.embedding_size,
            self.policy.activation_fn,
            self.gamma,
            {**world_model_optimizer, **self.observation_optimizer_kwargs},
            {**world_model_optimizer, **self.dynamics_optimizer_kwargs},
            compile_training=self.compile_world_model,
            skip_non_finite_updates=self.skip_non_finite_updates,
            continuous_actions=self.policy.action_distribution.continuous,
            **self.world_model_kwargs,
        ).to(self.device)
        self.actor_critic = ActorCritic(
            self.policy.actor,
            self.policy.make_critic().to(self.device),
            gae_lambda=self.gae_lambda,
            ent_coef=self.ent_coef,
            entropy_threshold=self.entropy_threshold,
            normalize_advantage=self.normalize_advantage,
            separate_target=self.target_update_interval > 1,
            actor_optimizer_kwargs={"lr": self.lr_schedule(1.0), **self.actor_optimizer_kwargs},
            critic_optimizer_kwargs=self.critic_optimizer_kwargs,
            skip_non_finite_updates=self.skip_non_finite_updates,
            action_distribution=self.policy.action_distribution,
        )
        self._create_aliases()
        self._base_learning_rates = BaseLearningRates(self._optimizers())
        self._metrics = Metrics()
        if self.mixed_precision is None:
            self._autocast_enabled = self.device.type == "cuda" and th.cuda.is_bf16_supported()
        else:
            self._autocast_enabled = bool(self.mixed_precision)
        self._warned_small_dataset = False
        # Filled by save() (the generators' states as tensors) and by load(); see _get_torch_save_params.
        self._torch_rng_state = th.empty(0, dtype=th.uint8, device=self.device)
        self._cuda_rng_states = th.empty(0, dtype=th.uint8, device=self.device)

    def _make_replay_buffer(self, buffer_size: int | None = None) -> TWMReplayBuffer:
        # TWM's own settings of the dataset (sampling temperature, reward transform, image scaling), then the user's;
        # a smaller buffer_size for a short stretch of play (dreams).
        normalize_images = self.policy_kwargs.get("normalize_images", True)
        kwargs = {
            "temperature": self.buffer_temperature,
            "reward_transform": self.reward_transform,
            "reward_scale": self.reward_scale,
        }
        kwargs = {**kwargs, "normalize_images": normalize_images, **self.replay_buffer_kwargs}
        return self.replay_buffer_class(
            self.buffer_size if buffer_size is None else buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            optimize_memory_usage=self.optimize_memory_usage,
            **kwargs,
        )

    def _create_aliases(self) -> None:
        # SB3's convention (DQN's q_net, SAC's critic): the checkpoint's state dicts keep these names.
        self.critic = self.actor_critic.critic
        self.critic_target = self.actor_critic.critic_target
        self.actor_optimizer = self.actor_critic.actor_optimizer
        self.critic_optimizer = self.actor_critic.critic_optimizer

    def _optimizers(self) -> list[th.optim.Optimizer]:
        return [
            self.world_model.observation_optimizer,
            self.world_model.dynamics_optimizer,
            self.actor_critic.actor_optimizer,
            self.actor_critic.critic_optimizer,
        ]

    @property
    def steps_per_env_step(self) -> float:
        """Training steps per env step: ``train_ratio``, or the value the budgets imply."""
        return training_steps_per_env_step(self)

    def autocast(self) -> th.autocast:
        """:return: The bf16 autocast context training runs under when mixed precision is on (a no-op otherwise)."""
        return th.autocast(self.device.type, dtype=th.bfloat16, enabled=self._autocast_enabled)

    def training_memory(self) -> contextlib.AbstractContextManager[bool]:
        """
        :return: The allocator setting ``learn()`` trains under (``reuse_cpu_memory`` on a CPU device, else nothing):
            code that runs the training steps itself enters it too.
        """
        return reuse_freed_memory(bool(self.reuse_cpu_memory) and self.device.type == "cpu")

    # ---------------------------------------------------------------- collection
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
            self._untrained_env_steps = 0
            self._progress_bar = None

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        # SB3's, with TWM's progress bar (what runs, and the remaining time from the cost of training) for SB3's.
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            self._progress_bar = TWMProgressBarCallback()
            callback = CallbackList([callback, self._progress_bar])
        callback.init_callback(self)
        return callback

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if reset_num_timesteps and self._pretrained:
            warnings.warn(
                "learn(reset_num_timesteps=True) on a TWM that has trained restarts its step counter: the next "
                f"learning_starts={self.learning_starts} steps are random actions again and training pauses for them. "
                "To continue the run, pass reset_num_timesteps=False.",
                stacklevel=4,
            )
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    # ---------------------------------------------------------------- training
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
            with self.autocast():
                pretrain(self)
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
        with self.autocast():
            for _ in range(num_steps):
                self.train_step(batch_size)
        if self.log_dream_interval and (self._n_updates + num_steps) // self.log_dream_interval > (
            self._n_updates // self.log_dream_interval
        ):
            log_dream(self)
        self._n_updates += num_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/skipped_updates", self._skipped_updates)

    def train_step(self, batch_size: int | None = None) -> None:
        """
        One training step (the reference's ``_train_step``): ``world_model_train_steps`` world-model updates on
        recency-balanced sequences, then imagination from the last update's latents and one actor-critic update.
        ``learn()`` runs it under :meth:`autocast`.

        :param batch_size: Sequences per world-model update (default ``batch_size``).
        """
        self.world_model.train()
        skipped = 0
        for _ in range(self.world_model_train_steps):
            batch = self.replay_buffer.sample_world_model_batch(
                batch_size or self.batch_size, self.sequence_length, self._vec_normalize_env
            )
            update: WorldModelUpdate = self.world_model.train_step(batch)
            self._record_update("world_model", update)
            skipped += update.skipped_updates
        if skipped:
            return  # the latents of a skipped update are no start for imagination either
        trajectories = self.imagine(update.output)
        self._metrics.record(
            "imagination",
            {
                "reward": trajectories.rewards.mean(),
                "discount": trajectories.discounts.mean(),
                "restart_fraction": trajectories.dones.float().mean(),
            },
        )
        self._record_update("actor_critic", self.actor_critic.update(trajectories))
        self._count_actor_critic_update()

    def imagine(self, output: WorldModelOutput) -> ImaginedTrajectories:
        """
        Imagine ``imagination_batch_size`` rollouts of ``imagination_horizon`` steps with the actor, as training does:
        from windows of the world-model batch ``output`` comes from, restarting from encoded real observations.

        :param output: The latents of a world-model update.
        :return: The rollouts.
        """
        restart = functools.partial(_fresh_latents, self.policy.encoder, self.replay_buffer, self._vec_normalize_env)
        starts = select_starts(output, self.imagination_batch_size)
        return imagine(
            self.world_model.dynamics_model,
            starts,
            self.policy.sample_actions,
            self.imagination_horizon,
            self.discount_threshold,
            restart,
        )

    def dream(self, sequences: int = DREAM_SEQUENCES, steps: int = DREAM_STEPS, context: int = DREAM_CONTEXT) -> Dream:
        """
        What the world model makes of the newest sequences of the dataset (changes nothing of the run).

        :param sequences: How many sequences.
        :param steps: Steps per sequence.
        :param context: Real steps given to the dynamics model before it goes on alone.
        :return: Real, reconstructed and world-model observations, predicted and real rewards and discounts.
        """
        return dream_from_dataset(self, sequences, steps, context)

    def _count_actor_critic_update(self) -> None:
        self._actor_critic_updates += 1
        if self._actor_critic_updates % self.target_update_interval == 0:
            self.actor_critic.sync_target()

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
        initial, current = self.lr_schedule(1.0), self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", current)
        self._base_learning_rates.scale(current / initial if initial > 0 else 0.0)

    # ----------------------------------------------------------------- logging
    def _record_update(self, prefix: str, update: Update | WorldModelUpdate) -> None:
        self._metrics.record(prefix, update.metrics)
        self._skipped_updates += update.skipped_updates

    def dump_logs(self) -> None:
        """Write the averaged training metrics, then SB3's rollout and time statistics."""
        self._metrics.write(self.logger)
        self.logger.record("train/skipped_updates", self._skipped_updates)
        super().dump_logs()

    # --------------------------------------------------------------- save/load
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *checkpointing.EXCLUDED_ATTRIBUTES]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        separate_target = ["critic_target"] if self.critic_target is not self.critic else []
        return [*checkpointing.STATE_DICTS, *separate_target], list(checkpointing.VARIABLES)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: list[str] | None = None,
        include: list[str] | None = None,
    ) -> None:
        """SB3's ``save``, written atomically as plain JSON and tensors (:mod:`sb3_twm.twm.checkpointing`)."""
        checkpointing.save_model(self, path, exclude, include)

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
        SB3's ``load``, never unpickling anything and restoring the random generators; a broken or foreign file, or an
        env that does not match the model, raises a ``CheckpointError`` naming the file (see ``load_model``).
        """
        return checkpointing.load_model(cls, path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save the dataset atomically as an ``.npz`` of plain arrays and JSON metadata, whatever the file name."""
        dataset_files.save_dataset(self, path)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """Load a dataset saved by ``save_replay_buffer``, checked first; ``truncate_last_traj`` is ignored (HER only)."""
        dataset_files.load_dataset(self, path)


def _make_atari_env_from_id(policy: Any, env: Any, seed: int | None, verbose: int) -> Any:
    # An ALE game id with CnnPolicy gets the paper's preprocessing, as rl-zoo3's atari entry gives it: SB3 alone would
    # make the raw 210x160 RGB frames without frame skip or stacking.
    cnn = policy == "CnnPolicy" or getattr(policy, "observation_architecture", None) == "cnn"
    if not (isinstance(env, str) and cnn and is_atari_id(env)):
        return env
    if verbose >= 1:
        print(f"TWM: {env} is an Atari game: using make_twm_atari_env({env!r}) (64x64 grayscale, frame skip 4 with "
              "max-pool, 4 stacked frames, up to 30 no-ops, no sticky actions, life loss ends an episode)")  # fmt: skip
    return make_twm_atari_env(env, n_envs=1, seed=seed)
