"""The faster code paths compute what the plain formulation computes (so speed never changes the algorithm)."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_twm.world_model import DynamicsModel, ObservationModel, WorldModel, WorldModelBatch, make_decoder, make_encoder

SPACE = spaces.Box(0, 255, (4, 64, 64), np.uint8)


def plain_decode(decoder, z: th.Tensor) -> th.Tensor:
    x = decoder.linear(z).view(-1, decoder.start_channels, *decoder.start_shape)
    return decoder.deconv(x)


def plain_encode(encoder, observations: th.Tensor) -> th.Tensor:
    return encoder.mlp(encoder.cnn(observations).flatten(1))


def test_decoder_outer_product_and_channels_last_match_transposed_convolutions():
    th.manual_seed(0)
    decoder = make_decoder(SPACE, 64, cnn_channels=8)
    z = th.randn(6, 64)
    assert th.allclose(decoder(z), plain_decode(decoder, z), atol=1e-5)


def test_encoder_channels_last_matches_plain_layout():
    th.manual_seed(0)
    encoder = make_encoder(SPACE, 8, 8, cnn_channels=8, hidden_dims=[32])
    observations = th.rand(5, 4, 64, 64)
    assert th.allclose(encoder(observations).flatten(1), plain_encode(encoder, observations), atol=1e-5)


def test_observation_losses_and_gradients_match_on_a_fixed_batch():
    th.manual_seed(0)
    encoder = make_encoder(SPACE, 8, 8, cnn_channels=8, hidden_dims=[32])
    decoder = make_decoder(SPACE, encoder.latent_dim, cnn_channels=8)
    model = ObservationModel(encoder, decoder)
    observations = th.rand(2, 3, 4, 64, 64)

    th.manual_seed(1)
    _, _, fast = model.reconstruction_entropy_losses(observations)
    fast["observation_loss"].backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    th.manual_seed(1)
    flat = observations.flatten(0, 1)
    logits = plain_encode(encoder, flat).view(6, 8, 8)
    probs = logits.softmax(-1)
    indices = th.multinomial(probs.reshape(-1, 8), 1).view(6, 8)
    z = (th.nn.functional.one_hot(indices, 8).float() + probs - probs.detach()).flatten(1)
    reconstruction = 0.5 * (plain_decode(decoder, z) - flat).pow(2) + 0.5 * np.log(2 * np.pi)
    plain_loss = reconstruction.sum((1, 2, 3)).mean()  # the entropy hinge is off for a fresh encoder
    plain_loss.backward()
    assert th.allclose(fast["observation_loss"], plain_loss, rtol=1e-6)
    for fast_grad, parameter in zip(fast_grads, model.parameters()):
        assert th.allclose(fast_grad, parameter.grad, rtol=1e-4, atol=1e-5)


def test_fused_adam_matches_the_plain_update():
    from sb3_twm.common.optim import make_adam

    th.manual_seed(0)
    fused_model = th.nn.Sequential(th.nn.Linear(8, 16), th.nn.SiLU(), th.nn.Linear(16, 1))
    plain_model = th.nn.Sequential(th.nn.Linear(8, 16), th.nn.SiLU(), th.nn.Linear(16, 1))
    plain_model.load_state_dict(fused_model.state_dict())
    settings = {"lr": 1e-2, "eps": 1e-5, "weight_decay": 1e-6}
    fused = make_adam(fused_model.parameters(), settings)
    plain = th.optim.Adam(plain_model.parameters(), foreach=False, **settings)
    assert fused.defaults["fused"]
    for _ in range(5):
        x = th.randn(32, 8)
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        assert th.allclose(a, b, rtol=1e-5, atol=1e-7)


def _tiny_world_model(compile_training: bool) -> WorldModel:
    th.manual_seed(0)
    encoder = make_encoder(SPACE, 8, 8, cnn_channels=8, hidden_dims=[32])
    decoder = make_decoder(SPACE, encoder.latent_dim, cnn_channels=8)
    dynamics = DynamicsModel(
        6, 8, 8, embed_dim=32, num_heads=2, head_dim=16, num_layers=2, feedforward_dim=64, memory_length=8,
        z_head_dims=[32], reward_head_dims=[32], discount_head_dims=[32],
    )  # fmt: skip
    settings = {"lr": 1e-3, "eps": 1e-5, "weight_decay": 1e-6, "max_grad_norm": 100.0}
    return WorldModel(ObservationModel(encoder, decoder), dynamics, settings, settings, compile_training=compile_training)


@pytest.mark.slow
def test_compiled_world_model_update_matches_the_eager_update(monkeypatch):
    # torch.compile draws random numbers (latent samples, dropout) from its own generator unless told to use eager's.
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    th.manual_seed(2)
    batch = WorldModelBatch(
        th.rand(2, 6, 4, 64, 64), th.randint(0, 6, (2, 5)), th.randn(2, 5), th.zeros(2, 5, dtype=th.bool),
        th.zeros(2, 5, dtype=th.bool),
    )  # fmt: skip
    results = []
    for compile_training in (False, True):
        world_model = _tiny_world_model(compile_training)
        th.manual_seed(3)
        _, terms, _ = world_model.train_step(batch)
        results.append((terms, dict(world_model.named_parameters())))
    (eager_terms, eager_parameters), (compiled_terms, compiled_parameters) = results
    assert eager_terms.keys() == compiled_terms.keys()
    for key, value in eager_terms.items():
        th.testing.assert_close(compiled_terms[key], value, rtol=1e-4, atol=1e-4, msg=key)
    for name, parameter in eager_parameters.items():
        th.testing.assert_close(compiled_parameters[name], parameter, rtol=1e-4, atol=1e-5, msg=name)
