"""
The observation model: an encoder from observations to the discrete latent z and a decoder back.

Two architectures share one interface: ``CnnEncoder``/``CnnDecoder`` for stacked image frames (the paper's) and
``MlpEncoder``/``MlpDecoder`` for flat vector observations.
"""

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_twm.common.distributions import normalized_latent_entropy, sample_one_hot
from sb3_twm.common.networks import create_mlp, flatten_batch, kaiming_init
from sb3_twm.world_model.losses import gaussian_nll, thresholded_entropy_loss

# The smallest image side the four stride-2 convolutions (kernel 4) can reduce to at least one pixel.
MIN_IMAGE_SIZE = 46


class Encoder(nn.Module):
    """
    Maps observations to the logits of the latent z: ``latent_categoricals`` categoricals of ``latent_classes`` classes.

    :param observation_shape: Shape of one (channel-first) observation.
    :param latent_categoricals: Number of categoricals in z.
    :param latent_classes: Number of classes of each categorical.
    """

    def __init__(self, observation_shape: Sequence[int], latent_categoricals: int, latent_classes: int) -> None:
        super().__init__()
        self.observation_shape = tuple(observation_shape)
        self.latent_categoricals = latent_categoricals
        self.latent_classes = latent_classes

    @property
    def latent_dim(self) -> int:
        return self.latent_categoricals * self.latent_classes

    def features(self, observations: th.Tensor) -> th.Tensor:
        raise NotImplementedError

    def forward(self, observations: th.Tensor) -> th.Tensor:
        # observations: (*batch, *observation_shape) floats (images scaled to [0, 1])
        # returns logits: (*batch, K, C)
        flat, batch_shape = flatten_batch(observations, len(self.observation_shape))
        logits = self.features(flat)
        return logits.view(*batch_shape, self.latent_categoricals, self.latent_classes)

    def latent(self, observations: th.Tensor, temperature: float = 0.0) -> th.Tensor:
        """
        Encode to a flat one-hot latent.

        :param observations: ``(*batch, *observation_shape)``.
        :param temperature: 0 takes the argmax (acting), 1 samples with straight-through gradients.
        :return: z of shape ``(*batch, K * C)``.
        """
        return sample_one_hot(self(observations), temperature).flatten(-2)


class CnnEncoder(Encoder):
    """
    Four convolutions (kernel 4, stride 2, no padding) with channels ``c -> h -> 2h -> 4h -> 8h`` and an activation after
    each, then an MLP to the latent logits. At 4x64x64 and h=48 this is the reference encoder (3,126,992 parameters).

    :param observation_shape: ``(channels, height, width)``.
    :param latent_categoricals: Number of categoricals in z.
    :param latent_classes: Number of classes of each categorical.
    :param cnn_channels: Base width h.
    :param hidden_dims: Hidden widths of the MLP after the convolutions.
    :param activation_fn: Activation.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        latent_categoricals: int = 32,
        latent_classes: int = 32,
        cnn_channels: int = 48,
        hidden_dims: Sequence[int] = (512, 512),
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__(observation_shape, latent_categoricals, latent_classes)
        channels, height, width = self.observation_shape
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"CnnPolicy needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels, got {height}x{width}: "
                "resize the frames (e.g. AtariWrapper(screen_size=64)) or use MlpPolicy for small inputs."
            )
        widths = [channels] + [cnn_channels * 2**i for i in range(4)]
        layers: list[nn.Module] = []
        for in_channels, out_channels in itertools.pairwise(widths):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2), activation_fn()]
        self.cnn = nn.Sequential(*layers)
        with th.no_grad():
            num_features = self.cnn(th.zeros(1, *self.observation_shape)).numel()
        self.mlp = create_mlp(num_features, self.latent_dim, hidden_dims, activation_fn)
        kaiming_init(self)

    def features(self, observations: th.Tensor) -> th.Tensor:
        # observations: (N, c, H, W) -> logits (N, K*C)
        # oneDNN's channels-last convolutions are faster on CPU; flatten(1) still reads features in (c, h, w) order.
        return self.mlp(self.cnn(observations.contiguous(memory_format=th.channels_last)).flatten(1))


class MlpEncoder(Encoder):
    """
    An MLP from flat vector observations to the latent logits.

    :param observation_shape: Shape of the observation (flattened).
    :param latent_categoricals: Number of categoricals in z.
    :param latent_classes: Number of classes of each categorical.
    :param hidden_dims: Hidden widths.
    :param activation_fn: Activation.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        latent_categoricals: int = 32,
        latent_classes: int = 32,
        hidden_dims: Sequence[int] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__(observation_shape, latent_categoricals, latent_classes)
        self.mlp = create_mlp(int(np.prod(self.observation_shape)), self.latent_dim, hidden_dims, activation_fn)
        kaiming_init(self)

    def features(self, observations: th.Tensor) -> th.Tensor:
        # observations: (N, *shape) -> logits (N, K*C)
        return self.mlp(observations.flatten(1))


class Decoder(nn.Module):
    """Maps a flat latent z to the means of unit-variance Gaussians over the observation."""

    def __init__(self, observation_shape: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.observation_shape = tuple(observation_shape)
        self.latent_dim = latent_dim

    def decode(self, z: th.Tensor) -> th.Tensor:
        raise NotImplementedError

    def forward(self, z: th.Tensor) -> th.Tensor:
        # z: (*batch, K*C) -> reconstructions (*batch, *observation_shape)
        flat, batch_shape = flatten_batch(z, 1)
        return self.decode(flat).view(*batch_shape, *self.observation_shape)


class CnnDecoder(Decoder):
    """
    A linear layer to ``(16h, s, s)`` then four transposed convolutions (kernels 5, 5, 6, 6, stride 2, no padding,
    channels ``16h -> 4h -> 2h -> h -> c``). A start size ``s`` of 1 gives 64x64 (the reference decoder, 5,107,540
    parameters at h=48); other image sizes start larger and crop the centre.

    :param observation_shape: ``(channels, height, width)``.
    :param latent_dim: Size of the flat latent z.
    :param cnn_channels: Base width h.
    :param activation_fn: Activation.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        latent_dim: int,
        cnn_channels: int = 48,
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__(observation_shape, latent_dim)
        channels, height, width = self.observation_shape
        # Output side of the stack is 16 * s + 48 for a start side s.
        self.start_shape = (max(1, math.ceil((height - 48) / 16)), max(1, math.ceil((width - 48) / 16)))
        self.start_channels = cnn_channels * 16
        self.linear = nn.Sequential(
            nn.Linear(latent_dim, self.start_channels * self.start_shape[0] * self.start_shape[1]), activation_fn()
        )
        widths = [self.start_channels, cnn_channels * 4, cnn_channels * 2, cnn_channels, channels]
        layers: list[nn.Module] = []
        for index, (kernel, in_channels, out_channels) in enumerate(zip((5, 5, 6, 6), widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(in_channels, out_channels, kernel_size=kernel, stride=2))
            if index < 3:
                layers.append(activation_fn())
        self.deconv = nn.Sequential(*layers)
        # The reference initialises only Linear/Conv2d layers, so the transposed convolutions keep PyTorch's defaults.
        kaiming_init(self.linear, last_layer_linear=False)

    def decode(self, z: th.Tensor) -> th.Tensor:
        # z: (N, K*C) -> (N, c, H, W)
        x = self.linear(z)
        first = self.deconv[0]
        if self.start_shape == (1, 1):
            # A transposed convolution of a 1x1 input is an outer product: one matrix product computes it (the same
            # values) several times faster than the convolution routine.
            kernel = first.kernel_size
            x = (x @ first.weight.flatten(1)).view(-1, first.out_channels, *kernel) + first.bias[:, None, None]
        else:
            x = first(x.view(-1, self.start_channels, *self.start_shape))
        for layer in self.deconv[1:]:
            if isinstance(layer, nn.ConvTranspose2d):
                # oneDNN's channels-last kernels are faster on CPU for these layers.
                x = x.contiguous(memory_format=th.channels_last)
            x = layer(x)
        height, width = self.observation_shape[1:]
        top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
        return x[..., top : top + height, left : left + width]


class MlpDecoder(Decoder):
    """
    An MLP from the flat latent z to a vector observation.

    :param observation_shape: Shape of the observation.
    :param latent_dim: Size of the flat latent z.
    :param hidden_dims: Hidden widths.
    :param activation_fn: Activation.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__(observation_shape, latent_dim)
        self.mlp = create_mlp(latent_dim, int(np.prod(self.observation_shape)), hidden_dims, activation_fn)
        kaiming_init(self)

    def decode(self, z: th.Tensor) -> th.Tensor:
        return self.mlp(z)


def make_encoder(
    observation_space: spaces.Box,
    latent_categoricals: int = 32,
    latent_classes: int = 32,
    architecture: str = "cnn",
    activation_fn: type[nn.Module] = nn.SiLU,
    cnn_channels: int = 48,
    hidden_dims: Sequence[int] | None = None,
) -> Encoder:
    """
    Build the encoder of an architecture: with :func:`make_decoder`, the one place where it is chosen.

    :param observation_space: Channel-first image space (``cnn``) or vector space (``mlp``).
    :param latent_categoricals: Number of categoricals in z.
    :param latent_classes: Number of classes of each categorical.
    :param architecture: ``"cnn"`` or ``"mlp"``.
    :param activation_fn: Activation.
    :param cnn_channels: Base width of the CNN.
    :param hidden_dims: Hidden widths of the encoder's MLP (None: the default of ``CnnEncoder`` or ``MlpEncoder``).
    :return: The encoder.
    """
    shape = observation_space.shape
    if architecture == "cnn":
        if len(shape) != 3:
            raise ValueError(f"CnnPolicy needs image observations of shape (channels, height, width), got {shape}.")
        widths = {} if hidden_dims is None else {"hidden_dims": hidden_dims}  # None: the class's default
        return CnnEncoder(shape, latent_categoricals, latent_classes, cnn_channels, activation_fn=activation_fn, **widths)
    if architecture == "mlp":
        widths = {} if hidden_dims is None else {"hidden_dims": hidden_dims}
        return MlpEncoder(shape, latent_categoricals, latent_classes, activation_fn=activation_fn, **widths)
    raise ValueError(f"Unknown observation architecture {architecture!r}: use 'cnn' or 'mlp'.")


def make_decoder(
    observation_space: spaces.Box,
    latent_dim: int,
    architecture: str = "cnn",
    activation_fn: type[nn.Module] = nn.SiLU,
    cnn_channels: int = 48,
    hidden_dims: Sequence[int] | None = None,
) -> Decoder:
    """
    Build the decoder matching :func:`make_encoder`.

    :param observation_space: The observation space.
    :param latent_dim: Size of the flat latent z.
    :param architecture: ``"cnn"`` or ``"mlp"``.
    :param activation_fn: Activation.
    :param cnn_channels: Base width of the CNN.
    :param hidden_dims: Hidden widths of the MLP decoder (mlp only; None: ``MlpDecoder``'s default).
    :return: The decoder.
    """
    if architecture == "cnn":
        return CnnDecoder(observation_space.shape, latent_dim, cnn_channels, activation_fn)
    if architecture == "mlp":
        widths = {} if hidden_dims is None else {"hidden_dims": hidden_dims}  # None: the class's default
        return MlpDecoder(observation_space.shape, latent_dim, activation_fn=activation_fn, **widths)
    raise ValueError(f"Unknown observation architecture {architecture!r}: use 'cnn' or 'mlp'.")


class ObservationModel(nn.Module):
    """
    Encoder and decoder of the world model, with their losses.

    :param encoder: Observations to latent logits (shared with the acting policy).
    :param decoder: Latent to observation means.
    :param decoder_coef: Weight of the reconstruction loss (``obs_decoder_coef``).
    :param latent_entropy_coef: Weight of the thresholded latent entropy loss (``obs_entropy_coef``).
    :param latent_entropy_threshold: Normalised entropy below which that loss is active (``obs_entropy_threshold``).
    :param consistency_coef: Weight of the encoder's half of the balanced KL (``obs_consistency_coef``).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        decoder_coef: float = 1.0,
        latent_entropy_coef: float = 5.0,
        latent_entropy_threshold: float = 0.1,
        consistency_coef: float = 0.01,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.decoder_coef = decoder_coef
        self.latent_entropy_coef = latent_entropy_coef
        self.latent_entropy_threshold = latent_entropy_threshold
        self.consistency_coef = consistency_coef

    def reconstruction_entropy_losses(
        self, observations: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        Encode, sample z with straight-through gradients, decode, and compute reconstruction + entropy losses.

        :param observations: ``(*batch, *observation_shape)`` floats.
        :return: Posterior logits ``(*batch, K, C)``, the straight-through z ``(*batch, K*C)``, and the loss terms.
        """
        # observations: (*batch, *obs_shape) -> logits (*batch, K, C), z (*batch, K*C)
        logits = self.encoder(observations)
        z = sample_one_hot(logits, temperature=1.0).flatten(-2)
        reconstructions = self.decoder(z)
        num_obs_dims = len(self.encoder.observation_shape)
        reconstruction = gaussian_nll(reconstructions, observations, tuple(range(-num_obs_dims, 0)))
        entropy = normalized_latent_entropy(logits)
        entropy_loss = thresholded_entropy_loss(entropy, self.latent_entropy_threshold)
        losses = {
            "reconstruction_loss": reconstruction,
            "latent_entropy": entropy.mean(),
            "latent_entropy_loss": entropy_loss,
            "observation_loss": self.decoder_coef * reconstruction + self.latent_entropy_coef * entropy_loss,
        }
        return logits, z, losses
