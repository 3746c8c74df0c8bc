"""Encoder and decoder: shapes, the reference's parameter counts, other image sizes, straight-through gradients."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_twm.common.distributions import sample_one_hot
from sb3_twm.world_model import CnnDecoder, CnnEncoder, ObservationModel, make_decoder, make_encoder


def num_parameters(module: th.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def image_space(shape):
    return spaces.Box(0, 255, shape, np.uint8)


def test_reference_parameter_counts():
    encoder = make_encoder(image_space((4, 64, 64)))
    decoder = make_decoder(image_space((4, 64, 64)), encoder.latent_dim)
    assert num_parameters(encoder) == 3_126_992
    assert num_parameters(decoder) == 5_107_540


def assert_one_hot(z: th.Tensor) -> None:
    """Every categorical (last axis) is one 1 and zeros, up to float rounding."""
    rounded = z.round()
    assert th.allclose(z, rounded, atol=1e-6)
    assert th.all((rounded == 0) | (rounded == 1)) and th.all(rounded.sum(-1) == 1)


@pytest.mark.parametrize("batch_shape", [(3,), (2, 5)])
def test_default_shapes(batch_shape):
    th.manual_seed(0)
    encoder = CnnEncoder((4, 64, 64))
    decoder = CnnDecoder((4, 64, 64), encoder.latent_dim)
    observations = th.rand(*batch_shape, 4, 64, 64)
    logits = encoder(observations)
    assert logits.shape == (*batch_shape, 32, 32)
    z = encoder.latent(observations, temperature=1.0)
    assert z.shape == (*batch_shape, 1024)
    # One class per categorical: one-hot vectors (a softmax would also sum to 1), up to the straight-through rounding.
    assert_one_hot(z.view(*batch_shape, 32, 32))
    assert decoder(z).shape == (*batch_shape, 4, 64, 64)


@pytest.mark.parametrize("shape", [(3, 84, 84), (1, 64, 96), (4, 48, 48)])
def test_other_image_sizes_derive_their_shapes(shape):
    encoder = make_encoder(image_space(shape), 4, 4, cnn_channels=4, hidden_dims=[16])
    decoder = make_decoder(image_space(shape), encoder.latent_dim, cnn_channels=4)
    z = encoder.latent(th.rand(2, *shape))
    assert decoder(z).shape == (2, *shape)


def test_too_small_images_are_refused():
    with pytest.raises(ValueError, match="at least 46x46"):
        make_encoder(image_space((4, 32, 32)))


def test_argmax_latent_is_deterministic():
    encoder = make_encoder(image_space((4, 64, 64)), 4, 4, cnn_channels=4, hidden_dims=[16])
    observations = th.rand(3, 4, 64, 64)
    assert th.equal(encoder.latent(observations, 0.0), encoder.latent(observations, 0.0))


def test_straight_through_sample_passes_gradients():
    logits = th.randn(5, 4, 6, requires_grad=True)
    z = sample_one_hot(logits, temperature=1.0)
    assert_one_hot(z.detach())
    (z * th.randn_like(z)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_observation_losses_and_coefficients():
    th.manual_seed(0)
    space = image_space((4, 64, 64))
    encoder = make_encoder(space, 4, 4, cnn_channels=4, hidden_dims=[16])
    model = ObservationModel(encoder, make_decoder(space, encoder.latent_dim, cnn_channels=4), latent_entropy_coef=5.0)
    logits, z, terms = model.reconstruction_entropy_losses(th.rand(2, 3, 4, 64, 64))
    assert logits.shape == (2, 3, 4, 4) and z.shape == (2, 3, 16)
    expected = terms["reconstruction_loss"] + 5.0 * terms["latent_entropy_loss"]
    assert terms["observation_loss"].item() == pytest.approx(expected.item())
    # A fresh encoder is close to uniform: the thresholded entropy term is off.
    assert terms["latent_entropy"].item() > 0.1 and terms["latent_entropy_loss"].item() == 0.0
