"""
The acting policy of TWM: the observation encoder and the actor. Acting needs nothing else (the paper's point:
the transformer is not needed at inference), so this is what ``predict()``, ``policy.save()`` and deployment use.
"""

import io
import json
import pathlib
import zipfile
from typing import Any, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_twm.common.actions import DEFAULT_ACTION_BINS, ActionDistribution, make_action_distribution
from sb3_twm.common.checkpoints import atomic_write, encode_value, is_unsaved
from sb3_twm.common.checks import check_box_observations, check_positive_ints
from sb3_twm.common.networks import create_mlp, orthogonal_init
from sb3_twm.world_model.observation_model import Decoder, Encoder, make_decoder, make_encoder

SelfTWMPolicy = TypeVar("SelfTWMPolicy", bound="TWMPolicy")
POLICY_FORMAT = "sb3-twm-policy"
POLICY_FORMAT_VERSION = 1
# Hidden widths of the actor and of the critic when net_arch does not give them (``actor_dims``, ``critic_dims``).
DEFAULT_NET_ARCH = (512, 512, 512, 512)


def _net_arch_dims(net_arch: list[int] | dict[str, list[int]] | None) -> tuple[list[int], list[int]]:
    if net_arch is None:
        return list(DEFAULT_NET_ARCH), list(DEFAULT_NET_ARCH)
    if isinstance(net_arch, dict):
        unknown = set(net_arch) - {"pi", "vf"}
        if unknown:
            raise ValueError(f"net_arch keys must be 'pi' (actor) and 'vf' (critic), got {sorted(unknown)}.")
        return list(net_arch.get("pi", DEFAULT_NET_ARCH)), list(net_arch.get("vf", DEFAULT_NET_ARCH))
    return list(net_arch), list(net_arch)


class TWMPolicy(BasePolicy):
    """
    Encoder and actor of TWM. Observations are encoded to the argmax latent z (temperature 0); the actor maps z to
    action logits. ``deterministic=True`` takes the most likely action, ``False`` samples (TWM samples at evaluation
    too). ``Box`` actions are quantised (:class:`~sb3_twm.common.actions.BinnedActions`): the actor chooses one of
    ``action_bins`` values in ``[-1, 1]`` per dimension, which ``predict`` rescales to the bounds (``squash_output``,
    as SB3 does for SAC).

    :param observation_space: Observation space (channel-first images for ``CnnPolicy``, vectors for ``MlpPolicy``).
    :param action_space: A ``Discrete`` action space, or a ``Box`` with finite bounds.
    :param lr_schedule: Learning rate schedule (kept for SB3 compatibility; the optimisers live in the algorithm).
    :param net_arch: Hidden widths of the actor and critic MLPs: ``dict(pi=[...], vf=[...])`` or one list for both
        (None or a missing key: ``DEFAULT_NET_ARCH``).
    :param activation_fn: Activation of all networks.
    :param latent_categoricals: Number of categoricals of z.
    :param latent_classes: Number of classes of each categorical.
    :param cnn_channels: Base width of the CNN encoder and decoder (``CnnPolicy``).
    :param encoder_hidden_dims: Hidden widths of the encoder's MLP (None: ``CnnEncoder``'s or ``MlpEncoder``'s default).
    :param decoder_hidden_dims: Hidden widths of the MLP decoder (``MlpPolicy``; None: ``MlpDecoder``'s default).
    :param normalize_images: Scale images to [0, 1].
    :param action_bins: Values per dimension of ``Box`` actions (ignored for ``Discrete``).
    """

    observation_architecture = "cnn"

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.SiLU,
        latent_categoricals: int = 32,
        latent_classes: int = 32,
        cnn_channels: int = 48,
        encoder_hidden_dims: list[int] | None = None,
        decoder_hidden_dims: list[int] | None = None,
        normalize_images: bool = True,
        action_bins: int = DEFAULT_ACTION_BINS,
    ) -> None:
        action_distribution = make_action_distribution(action_space, action_bins)
        check_box_observations(observation_space)
        if self.observation_architecture == "cnn" and not is_image_space(observation_space, check_channels=False):
            raise ValueError(
                f"CnnPolicy needs uint8 image observations (channels, height, width) in [0, 255], got "
                f"{observation_space}. Use MlpPolicy for vector observations."
            )
        check_positive_ints(
            {"latent_categoricals": latent_categoricals, "latent_classes": latent_classes, "cnn_channels": cnn_channels}
        )
        super().__init__(
            observation_space,
            action_space,
            normalize_images=normalize_images,
            squash_output=action_distribution.continuous,
        )
        self.action_bins = action_bins
        self.action_distribution: ActionDistribution = action_distribution
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.latent_categoricals = latent_categoricals
        self.latent_classes = latent_classes
        self.cnn_channels = cnn_channels
        self.encoder_hidden_dims = encoder_hidden_dims
        self.decoder_hidden_dims = decoder_hidden_dims
        self.actor_dims, self.critic_dims = _net_arch_dims(net_arch)
        self.encoder: Encoder = make_encoder(
            observation_space,
            latent_categoricals,
            latent_classes,
            self.observation_architecture,
            activation_fn,
            cnn_channels,
            encoder_hidden_dims,
        )
        self.actor = create_mlp(self.latent_dim, action_distribution.num_logits, self.actor_dims, activation_fn)
        orthogonal_init(self.actor)

    @property
    def latent_dim(self) -> int:
        return self.latent_categoricals * self.latent_classes

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            latent_categoricals=self.latent_categoricals,
            latent_classes=self.latent_classes,
            cnn_channels=self.cnn_channels,
            encoder_hidden_dims=self.encoder_hidden_dims,
            decoder_hidden_dims=self.decoder_hidden_dims,
        )
        if self.action_distribution.continuous:
            data.update(action_bins=self.action_bins)
        return data

    def make_decoder(self) -> Decoder:
        """
        :return: A decoder matching this policy's encoder (the world model owns it; acting does not need it).
        """
        return make_decoder(
            self.observation_space,
            self.latent_dim,
            self.observation_architecture,
            self.activation_fn,
            self.cnn_channels,
            self.decoder_hidden_dims,
        )

    def make_critic(self) -> nn.Sequential:
        """
        :return: A critic on z with the ``vf`` widths of ``net_arch`` (trained by the algorithm, not used to act).
        """
        critic = create_mlp(self.latent_dim, 1, self.critic_dims, self.activation_fn)
        orthogonal_init(critic)
        return critic

    def encode(self, observation: PyTorchObs) -> th.Tensor:
        """
        :param observation: Raw observations ``(N, *obs_shape)`` as the env gives them.
        :return: Argmax latents ``(N, K*C)``.
        """
        features = preprocess_obs(observation, self.observation_space, normalize_images=self.normalize_images)
        return self.encoder.latent(features.float(), temperature=0.0)

    def sample_actions(self, z: th.Tensor) -> th.Tensor:
        """
        :param z: ``(N, K*C)`` latents.
        :return: Actions sampled with temperature 1: ``(N,)`` discrete, or ``(N, action_dim)`` values in ``[-1, 1]``.
        """
        return self.action_distribution.sample(self.actor(z))

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # observation: (N, *obs_shape) -> actions (N,), or (N, action_dim) values in [-1, 1] that predict() rescales
        z = self.encode(observation)
        if deterministic:
            return self.action_distribution.mode(self.actor(z))
        return self.sample_actions(z)


    def save(self, path: str | pathlib.Path) -> None:
        """
        Save the policy (encoder and actor) as a zip of its constructor's arguments in plain JSON and its weights,
        written atomically and never pickled (SB3's ``BaseModel.save`` pickles the arguments).

        :param path: The file.
        """
        parameters = {"policy_class": type(self), **self._get_constructor_parameters()}
        data = {key: encode_value(value) for key, value in parameters.items()}
        unsaved = sorted(key for key, value in data.items() if is_unsaved(value))
        if unsaved:
            raise ValueError(f"The policy's {unsaved} cannot be saved as data (code or unknown objects).")
        weights = io.BytesIO()
        th.save(self.state_dict(), weights)
        metadata = {"format": POLICY_FORMAT, "version": POLICY_FORMAT_VERSION, "class": type(self).__qualname__}
        with atomic_write(path) as file, zipfile.ZipFile(file, "w") as archive:
            archive.writestr("format", json.dumps(metadata))
            archive.writestr("data", json.dumps(data))
            archive.writestr("policy.pth", weights.getvalue())

    @classmethod
    def load(cls: type[SelfTWMPolicy], path: str | pathlib.Path, device: th.device | str = "auto") -> SelfTWMPolicy:
        """
        Load a policy saved by :meth:`save`, as ``TWM.load`` loads models: one open of a regular file, members read at
        most as large as the policy allows, nothing unpickled, the weights checked against the network before they
        are loaded. A broken or foreign file raises a ``CheckpointError`` naming it.

        :param path: The file.
        :param device: Device.
        :return: The policy.
        """
        from sb3_twm.twm.checkpointing import load_policy

        return load_policy(cls, path, device)


class CnnPolicy(TWMPolicy):
    """TWM policy for stacked image frames: the paper's CNN encoder (and, in the world model, CNN decoder)."""

    observation_architecture = "cnn"


class MlpPolicy(TWMPolicy):
    """TWM policy for vector observations: MLP encoder (and, in the world model, MLP decoder)."""

    observation_architecture = "mlp"
