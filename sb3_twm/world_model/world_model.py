"""The world model: the observation model and the dynamics model, trained together on sequences of experience."""

import inspect
from collections.abc import Sequence
from typing import Any

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.common.optim import make_adam, optimizer_step
from sb3_twm.common.type_aliases import Update, WorldModelBatch, WorldModelOutput, WorldModelUpdate
from sb3_twm.world_model.dynamics_model import DynamicsModel
from sb3_twm.world_model.losses import consistency_loss, dynamics_cross_entropy, gaussian_nll
from sb3_twm.world_model.observation_model import Decoder, Encoder, ObservationModel

# Adam settings of both world-model optimisers (``obs_*``/``dyn_*`` of the reference; ``lr`` comes from the algorithm).
OPTIMIZER_DEFAULTS: dict[str, float] = {"eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 100.0}

class WorldModel(nn.Module):
    """
    TWM's world model with its two optimisers: :meth:`train_step` is one update of both on a batch of sequences, the
    ``pretrain_*`` steps update one of them alone. :meth:`build` makes one from the keyword arguments TWM's
    ``world_model_kwargs`` holds.

    :param observation_model: Encoder and decoder (the encoder is shared with the acting policy).
    :param dynamics_model: The Transformer-XL dynamics model.
    :param observation_optimizer_kwargs: Adam settings of the observation model: ``lr``, and ``eps``,
        ``weight_decay``, ``max_grad_norm`` (defaults: ``OPTIMIZER_DEFAULTS``), optionally ``betas``.
    :param dynamics_optimizer_kwargs: Adam settings of the dynamics model (same keys and defaults).
    :param discount_factor: gamma; the discount target is ``gamma * (1 - terminated)``.
    :param z_coef: Weight of the dynamics model's next-latent cross-entropy (``dyn_z_coef``).
    :param reward_coef: Weight of the reward loss (``dyn_reward_coef``).
    :param discount_coef: Weight of the discount loss (``dyn_discount_coef``).
    :param compile_training: Run the two training forward passes (observation model with its losses, dynamics model
        with its losses) through ``torch.compile``; their backward passes are compiled with them. The same
        computation up to float rounding, but its random draws (latent samples, dropout) come from the compiler's
        generator unless ``torch._inductor.config.fallback_random`` is set. The first updates pay the compilation.
        Acting and imagination stay eager.
    :param skip_non_finite_updates: Skip an optimiser step whose gradients are not finite (see
        :func:`~sb3_twm.common.optim.optimizer_step`); the updates report how many they skipped.
    """

    def __init__(
        self,
        observation_model: ObservationModel,
        dynamics_model: DynamicsModel,
        observation_optimizer_kwargs: dict[str, Any],
        dynamics_optimizer_kwargs: dict[str, Any],
        discount_factor: float = 0.99,
        z_coef: float = 1.0,
        reward_coef: float = 10.0,
        discount_coef: float = 50.0,
        compile_training: bool = False,
        skip_non_finite_updates: bool = False,
    ) -> None:
        super().__init__()
        self.observation_model = observation_model
        self.dynamics_model = dynamics_model
        self.discount_factor = discount_factor
        self.z_coef = z_coef
        self.reward_coef = reward_coef
        self.discount_coef = discount_coef
        observation_settings = {**OPTIMIZER_DEFAULTS, **observation_optimizer_kwargs}
        dynamics_settings = {**OPTIMIZER_DEFAULTS, **dynamics_optimizer_kwargs}
        self.observation_max_grad_norm = observation_settings["max_grad_norm"]
        self.dynamics_max_grad_norm = dynamics_settings["max_grad_norm"]
        self.observation_optimizer = make_adam(observation_model.parameters(), observation_settings)
        self.dynamics_optimizer = make_adam(dynamics_model.parameters(), dynamics_settings)
        self.compile_training = compile_training
        self.skip_non_finite_updates = skip_non_finite_updates
        # Plain attributes, not submodules: the parameters and state dict stay those of the eager modules.
        self._observation_losses = self.observation_model.reconstruction_entropy_losses
        self._dynamics_losses = self.dynamics_losses
        if compile_training:
            self._observation_losses = th.compile(self._observation_losses)
            self._dynamics_losses = th.compile(self._dynamics_losses)

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        decoder: Decoder,
        num_actions: int,
        activation_fn: type[nn.Module],
        discount_factor: float,
        observation_optimizer_kwargs: dict[str, Any],
        dynamics_optimizer_kwargs: dict[str, Any],
        compile_training: bool = False,
        skip_non_finite_updates: bool = False,
        continuous_actions: bool = False,
        **world_model_kwargs: Any,
    ) -> "WorldModel":
        """
        Build the observation model, the dynamics model and the world model from one set of keyword arguments: each
        key goes to the constructor that takes it (:func:`world_model_keys`), whose signature holds its default.

        :param encoder: The (acting policy's) encoder.
        :param decoder: A matching decoder.
        :param num_actions: Number of discrete actions, or the length of continuous action vectors.
        :param activation_fn: Activation of the dynamics model (the policy's).
        :param discount_factor: gamma.
        :param observation_optimizer_kwargs: See the class.
        :param dynamics_optimizer_kwargs: See the class.
        :param compile_training: See the class.
        :param skip_non_finite_updates: See the class.
        :param continuous_actions: Actions are float vectors (``Box``), see ``DynamicsModel``.
        :param world_model_kwargs: Dynamics-model architecture and loss weights, by the names of
            :func:`world_model_keys`.
        :return: The world model.
        """
        keys = world_model_keys()
        valid = sorted(key for group in keys.values() for key in group)
        unknown = set(world_model_kwargs) - set(valid)
        if unknown:
            raise ValueError(f"Unknown world_model_kwargs {sorted(unknown)}; valid keys: {valid}.")
        chosen = {
            part: {key: value for key, value in world_model_kwargs.items() if key in group} for part, group in keys.items()
        }
        dynamics_model = DynamicsModel(
            num_actions,
            encoder.latent_categoricals,
            encoder.latent_classes,
            activation_fn=activation_fn,
            discount_factor=discount_factor,
            continuous_actions=continuous_actions,
            **chosen["dynamics_model"],
        )
        return cls(
            ObservationModel(encoder, decoder, **chosen["observation_model"]),
            dynamics_model,
            observation_optimizer_kwargs,
            dynamics_optimizer_kwargs,
            discount_factor=discount_factor,
            compile_training=compile_training,
            skip_non_finite_updates=skip_non_finite_updates,
            **chosen["world_model"],
        )

    @property
    def encoder(self) -> nn.Module:
        return self.observation_model.encoder

    def dynamics_losses(
        self,
        z: th.Tensor,
        actions: th.Tensor,
        rewards: th.Tensor,
        terminated: th.Tensor,
        truncated: th.Tensor,
        target_logits: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        The dynamics model's losses on ``T+1`` steps (one context step and ``T`` trained steps).

        :param z: ``(B, T+1, K*C)`` input latents (detached).
        :param actions: ``(B, T+1)``.
        :param rewards: ``(B, T+1)`` transformed rewards.
        :param terminated: ``(B, T+1)``.
        :param truncated: ``(B, T+1)``.
        :param target_logits: ``(B, T, K, C)`` encoder logits of the observations after steps 1..T.
        :return: The total loss, the predicted logits of every step (``(B, T+1, K, C)``) and the loss terms.
        """
        # z: (B, T+1, K*C); actions, rewards, terminated, truncated: (B, T+1); target_logits: (B, T, K, C)
        dones = terminated | truncated
        prediction = self.dynamics_model(z, actions, rewards[:, :-1], dones[:, :-1])
        # The context step's prediction only serves the consistency loss; the losses use steps 1..T.
        z_loss = dynamics_cross_entropy(target_logits, prediction.z_logits[:, 1:], weights=(~dones[:, 1:]).float())
        reward_loss = gaussian_nll(prediction.reward[:, 1:].float(), rewards[:, 1:])
        discount_target = self.discount_factor * (~terminated[:, 1:]).float()
        discount_loss = F.binary_cross_entropy_with_logits(prediction.discount_logits[:, 1:].float(), discount_target)
        loss = self.z_coef * z_loss + self.reward_coef * reward_loss + self.discount_coef * discount_loss
        terms = {
            "dynamics_loss": loss,
            "latent_cross_entropy": z_loss,
            "reward_loss": reward_loss,
            "discount_loss": discount_loss,
        }
        return loss, prediction.z_logits, terms

    def train_step(self, batch: WorldModelBatch) -> WorldModelUpdate:
        """
        One update of the dynamics model, then of the observation model, on one batch.

        :param batch: Sequences with context step and next observation.
        :return: The latents used (for imagination starts), the detached loss terms and the skipped steps.
        """
        # observations: (B, T+2, *obs_shape); actions, rewards, terminated, truncated: (B, T+1)
        encoder = self.observation_model.encoder
        with th.no_grad():
            context_z = encoder.latent(batch.observations[:, 0], temperature=1.0)  # (B, K*C)
            next_logits = encoder(batch.observations[:, -1])  # (B, K, C)
        posterior_logits, z, observation_terms = self._observation_losses(
            batch.observations[:, 1:-1]
        )  # (B, T, K, C), (B, T, K*C)
        dynamics_z = th.cat([context_z[:, None], z.detach()], dim=1)  # (B, T+1, K*C)
        target_logits = th.cat([posterior_logits[:, 1:].detach(), next_logits[:, None]], dim=1)
        dynamics_loss, prior_logits, dynamics_terms = self._dynamics_losses(
            dynamics_z, batch.actions, batch.rewards, batch.terminated, batch.truncated, target_logits
        )
        consistency = consistency_loss(posterior_logits, prior_logits[:, :-1])
        observation_loss = observation_terms["observation_loss"] + self.observation_model.consistency_coef * consistency

        dynamics_grad_norm, dynamics_stepped = self._step_dynamics(dynamics_loss)
        observation_grad_norm, observation_stepped = self._step_observation(observation_loss)
        terms = {**observation_terms, **dynamics_terms}
        terms.update(
            consistency_loss=consistency,
            observation_loss=observation_loss,
            observation_grad_norm=observation_grad_norm,
            dynamics_grad_norm=dynamics_grad_norm,
        )
        output = WorldModelOutput(dynamics_z, batch.actions, batch.rewards, batch.terminated | batch.truncated)
        metrics = {key: value.detach() for key, value in terms.items()}
        return WorldModelUpdate(output, metrics, 2 - dynamics_stepped - observation_stepped)

    def pretrain_observation_step(self, observations: th.Tensor) -> Update:
        """
        One update of the observation model alone on single frames (reconstruction and entropy losses).

        :param observations: ``(N, *obs_shape)`` floats.
        :return: The detached loss terms and whether the step was skipped.
        """
        _, _, terms = self.observation_model.reconstruction_entropy_losses(observations)
        _, stepped = self._step_observation(terms["observation_loss"])
        return Update({key: value.detach() for key, value in terms.items()}, int(not stepped))

    def pretrain_dynamics_step(
        self, logits: th.Tensor, actions: th.Tensor, rewards: th.Tensor, terminated: th.Tensor, truncated: th.Tensor
    ) -> Update:
        """
        One update of the dynamics model alone on cached encoder logits of ``T+2`` observations.

        :param logits: ``(B, T+2, K, C)`` encoder logits (context step, sequence, next observation).
        :param actions: ``(B, T+1)``.
        :param rewards: ``(B, T+1)`` transformed rewards.
        :param terminated: ``(B, T+1)``.
        :param truncated: ``(B, T+1)``.
        :return: The detached loss terms and whether the step was skipped.
        """
        z = sample_one_hot(logits[:, :-1], temperature=1.0, straight_through=False).flatten(-2)
        loss, _, terms = self.dynamics_losses(z, actions, rewards, terminated, truncated, logits[:, 2:])
        _, stepped = self._step_dynamics(loss)
        return Update({key: value.detach() for key, value in terms.items()}, int(not stepped))

    def _step_observation(self, loss: th.Tensor) -> tuple[th.Tensor, bool]:
        return optimizer_step(
            self.observation_optimizer,
            loss,
            self.observation_max_grad_norm,
            self.skip_non_finite_updates,
            "observation model",
        )

    def _step_dynamics(self, loss: th.Tensor) -> tuple[th.Tensor, bool]:
        return optimizer_step(
            self.dynamics_optimizer, loss, self.dynamics_max_grad_norm, self.skip_non_finite_updates, "dynamics model"
        )


# Set by TWM itself (from the policy, the action space and gamma), not by world_model_kwargs.
_SET_BY_THE_ALGORITHM = frozenset(
    {"num_actions", "latent_categoricals", "latent_classes", "activation_fn", "discount_factor", "encoder", "decoder",
     "observation_model", "dynamics_model", "observation_optimizer_kwargs", "dynamics_optimizer_kwargs",
     "compile_training", "skip_non_finite_updates", "continuous_actions", "self"}
)  # fmt: skip


def world_model_keys() -> dict[str, tuple[str, ...]]:
    """
    :return: The keys of ``world_model_kwargs`` by the constructor that takes them (``"observation_model"``:
        :class:`ObservationModel`, ``"dynamics_model"``: :class:`DynamicsModel`, ``"world_model"``: the loss weights
        of :class:`WorldModel`).
    """
    constructors = {"observation_model": ObservationModel, "dynamics_model": DynamicsModel, "world_model": WorldModel}
    return {
        part: tuple(name for name in inspect.signature(constructor.__init__).parameters if name not in _SET_BY_THE_ALGORITHM)
        for part, constructor in constructors.items()
    }


def world_model_defaults() -> dict[str, Any]:
    """:return: Every key of ``world_model_kwargs`` with its default (read from the constructors' signatures)."""
    constructors = {"observation_model": ObservationModel, "dynamics_model": DynamicsModel, "world_model": WorldModel}
    defaults: dict[str, Any] = {}
    for part, names in world_model_keys().items():
        parameters = inspect.signature(constructors[part].__init__).parameters
        for name in names:
            default = parameters[name].default
            defaults[name] = list(default) if isinstance(default, Sequence) and not isinstance(default, str) else default
    return defaults
