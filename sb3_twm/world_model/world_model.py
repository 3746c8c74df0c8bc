"""The world model: the observation model and the dynamics model, trained together on sequences of experience."""

from typing import Any, NamedTuple

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.common.optim import make_adam, optimizer_step
from sb3_twm.world_model.dynamics_model import DynamicsModel
from sb3_twm.world_model.losses import consistency_loss, dynamics_cross_entropy, gaussian_nll
from sb3_twm.world_model.observation_model import ObservationModel


class WorldModelBatch(NamedTuple):
    """
    A batch of ``B`` sequences of ``T`` steps with one context step in front and the next observation at the end.
    Index 0 is the context step, 1..T the sequence, T+1 (observations only) the next observation.
    """

    observations: th.Tensor  # (B, T+2, *obs_shape) floats
    actions: th.Tensor  # (B, T+1) long
    rewards: th.Tensor  # (B, T+1) transformed rewards
    terminated: th.Tensor  # (B, T+1) bool
    truncated: th.Tensor  # (B, T+1) bool


class WorldModelOutput(NamedTuple):
    """What one world-model update leaves for imagination: the latents it used, detached."""

    z: th.Tensor  # (B, T+1, K*C) sampled latents of the context and sequence steps
    actions: th.Tensor  # (B, T+1)
    rewards: th.Tensor  # (B, T+1)
    dones: th.Tensor  # (B, T+1) bool


DEFAULT_LOSS_COEFFICIENTS = {"z_coef": 1.0, "reward_coef": 10.0, "discount_coef": 50.0}


class WorldModel(nn.Module):
    """
    TWM's world model with its two optimisers.

    :param observation_model: Encoder and decoder (the encoder is shared with the acting policy).
    :param dynamics_model: The Transformer-XL dynamics model.
    :param observation_optimizer_kwargs: Adam settings of the observation model (``lr``, ``eps``, ``weight_decay``,
        ``max_grad_norm``).
    :param dynamics_optimizer_kwargs: Adam settings of the dynamics model.
    :param discount_factor: gamma; the discount target is ``gamma * (1 - terminated)``.
    :param z_coef: Weight of the dynamics model's next-latent cross-entropy.
    :param reward_coef: Weight of the reward loss.
    :param discount_coef: Weight of the discount loss.
    :param compile_training: Run the two training forward passes (observation model with its losses, dynamics model
        with its losses) through ``torch.compile``; their backward passes are compiled with them. The same
        computation up to float rounding, but its random draws (latent samples, dropout) come from the compiler's
        generator unless ``torch._inductor.config.fallback_random`` is set. The first updates pay the compilation.
        Acting and imagination stay eager.
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
    ) -> None:
        super().__init__()
        self.observation_model = observation_model
        self.dynamics_model = dynamics_model
        self.discount_factor = discount_factor
        self.z_coef = z_coef
        self.reward_coef = reward_coef
        self.discount_coef = discount_coef
        self.observation_max_grad_norm = observation_optimizer_kwargs["max_grad_norm"]
        self.dynamics_max_grad_norm = dynamics_optimizer_kwargs["max_grad_norm"]
        self.observation_optimizer = make_adam(observation_model.parameters(), observation_optimizer_kwargs)
        self.dynamics_optimizer = make_adam(dynamics_model.parameters(), dynamics_optimizer_kwargs)
        self.compile_training = compile_training
        # Plain attributes, not submodules: the parameters and state dict stay those of the eager modules.
        self._observation_losses = self.observation_model.reconstruction_entropy_losses
        self._dynamics_losses = self.dynamics_losses
        if compile_training:
            self._observation_losses = th.compile(self._observation_losses)
            self._dynamics_losses = th.compile(self._dynamics_losses)

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

    def train_step(self, batch: WorldModelBatch) -> tuple[WorldModelOutput, dict[str, th.Tensor]]:
        """
        One update of the dynamics model, then of the observation model, on one batch.

        :param batch: Sequences with context step and next observation.
        :return: The latents used (for imagination starts) and the detached loss terms.
        """
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

        dynamics_grad_norm = optimizer_step(self.dynamics_optimizer, dynamics_loss, self.dynamics_max_grad_norm)
        observation_grad_norm = optimizer_step(
            self.observation_optimizer, observation_loss, self.observation_max_grad_norm
        )
        terms = {**observation_terms, **dynamics_terms}
        terms.update(
            consistency_loss=consistency,
            observation_loss=observation_loss,
            observation_grad_norm=observation_grad_norm,
            dynamics_grad_norm=dynamics_grad_norm,
        )
        output = WorldModelOutput(dynamics_z, batch.actions, batch.rewards, batch.terminated | batch.truncated)
        return output, {key: value.detach() for key, value in terms.items()}

    def pretrain_observation_step(self, observations: th.Tensor) -> dict[str, th.Tensor]:
        """
        One update of the observation model alone on single frames (reconstruction and entropy losses).

        :param observations: ``(N, *obs_shape)`` floats.
        :return: The detached loss terms.
        """
        _, _, terms = self.observation_model.reconstruction_entropy_losses(observations)
        optimizer_step(self.observation_optimizer, terms["observation_loss"], self.observation_max_grad_norm)
        return {key: value.detach() for key, value in terms.items()}

    def pretrain_dynamics_step(
        self, logits: th.Tensor, actions: th.Tensor, rewards: th.Tensor, terminated: th.Tensor, truncated: th.Tensor
    ) -> dict[str, th.Tensor]:
        """
        One update of the dynamics model alone on cached encoder logits of ``T+2`` observations.

        :param logits: ``(B, T+2, K, C)`` encoder logits (context step, sequence, next observation).
        :param actions: ``(B, T+1)``.
        :param rewards: ``(B, T+1)`` transformed rewards.
        :param terminated: ``(B, T+1)``.
        :param truncated: ``(B, T+1)``.
        :return: The detached loss terms.
        """
        z = sample_one_hot(logits[:, :-1], temperature=1.0, straight_through=False).flatten(-2)
        loss, _, terms = self.dynamics_losses(z, actions, rewards, terminated, truncated, logits[:, 2:])
        optimizer_step(self.dynamics_optimizer, loss, self.dynamics_max_grad_norm)
        return {key: value.detach() for key, value in terms.items()}
