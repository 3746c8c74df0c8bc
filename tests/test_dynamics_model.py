"""The Transformer-XL dynamics model: shapes, parameter counts, memory equivalence, causal and episode masking."""

import pytest
import torch as th
import torch.nn.functional as F

from sb3_twm.world_model import DynamicsModel
from sb3_twm.world_model.transformer_xl import KeyValueCache

K, C, A = 4, 4, 3


def tiny_model(memory_length: int = 4, input_rewards: bool = True) -> DynamicsModel:
    th.manual_seed(0)
    model = DynamicsModel(
        A, K, C, embed_dim=32, num_heads=2, head_dim=8, num_layers=2, feedforward_dim=64, memory_length=memory_length,
        z_head_dims=[32], reward_head_dims=[32], discount_head_dims=[32], input_rewards=input_rewards,
    )  # fmt: skip
    return model.eval()


def random_latents(*shape: int) -> th.Tensor:
    return F.one_hot(th.randint(0, C, (*shape, K)), C).float().flatten(-2)


def num_parameters(module: th.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts():
    assert num_parameters(DynamicsModel(6)) == 10_779_394
    assert num_parameters(DynamicsModel(18)) == 10_782_466


def test_default_shapes_and_initial_discount():
    model = DynamicsModel(6).eval()
    B, S = 2, 17
    prediction = model(random_latents(B, S).repeat_interleave(64, -1)[..., :1024], th.randint(0, 6, (B, S)),
                       th.randn(B, S - 1), th.zeros(B, S - 1, dtype=th.bool))  # fmt: skip
    assert prediction.z_logits.shape == (B, S, 32, 32)
    assert prediction.reward.shape == (B, S) and prediction.discount_logits.shape == (B, S)
    assert prediction.hidden.shape == (B, S, 256)
    # The discount head's bias starts at gamma, read as a logit (reference quirk).
    assert model.discount_head[-1].bias.item() == pytest.approx(0.99)


@pytest.mark.parametrize("input_rewards", [True, False])
@pytest.mark.parametrize("memory_length,horizon", [(4, 3), (2, 7)])
def test_memory_matches_recomputing_the_visible_context(memory_length, horizon, input_rewards):
    """Imagination with cached memory predicts what a full pass over the same visible tokens predicts."""
    model = tiny_model(memory_length, input_rewards)
    th.manual_seed(1)
    N = 5
    z = random_latents(N, horizon + 1)
    actions = th.randint(0, A, (N, horizon + 1))
    rewards = th.randn(N, horizon)
    dones = th.rand(N, horizon) < 0.2
    memory = model.start_memory(z[:, 0], actions[:, 0])
    assert len(memory.caches[0]) == 2
    cached = []
    for t in range(1, horizon + 1):
        prediction, memory = model.step(memory, rewards[:, t - 1], dones[:, t - 1], z[:, t], actions[:, t])
        cached.append(prediction)
        assert len(memory.caches[0]) <= model.memory_tokens  # O(1) memory per step
        assert memory.caches[0].keys.shape[2] == model.cache_capacity
    full = model(z, actions, rewards, dones)
    for t, prediction in enumerate(cached, start=1):
        assert th.allclose(prediction.z_logits[:, 0], full.z_logits[:, t], atol=1e-5)
        assert th.allclose(prediction.reward[:, 0], full.reward[:, t], atol=1e-5)
        assert th.allclose(prediction.discount_logits[:, 0], full.discount_logits[:, t], atol=1e-5)


def test_predictions_do_not_see_the_future():
    model = tiny_model(memory_length=8)
    z, actions = random_latents(2, 6), th.randint(0, A, (2, 6))
    rewards, dones = th.randn(2, 5), th.zeros(2, 5, dtype=th.bool)
    base = model(z, actions, rewards, dones)
    z2, rewards2 = z.clone(), rewards.clone()
    z2[:, 4:] = random_latents(2, 2)
    rewards2[:, 3:] = th.randn(2, 2)
    changed = model(z2, actions, rewards2, dones)
    # Step 3's prediction is read at a_3, before r_3 and z_4: unchanged. Step 4 sees z_4: changed.
    assert th.allclose(base.z_logits[:, :4], changed.z_logits[:, :4], atol=1e-6)
    assert not th.allclose(base.z_logits[:, 4], changed.z_logits[:, 4])


def test_no_attention_across_episode_ends():
    model = tiny_model(memory_length=8)
    z, actions = random_latents(1, 6), th.randint(0, A, (1, 6))
    rewards = th.randn(1, 5)
    dones = th.tensor([[False, True, False, False, False]])  # the episode ends after step 1
    base = model(z, actions, rewards, dones)
    z2, actions2, rewards2 = z.clone(), actions.clone(), rewards.clone()
    z2[:, :2] = random_latents(1, 2)
    actions2[:, :2] = (actions[:, :2] + 1) % A
    rewards2[:, :2] = th.randn(1, 2)
    changed = model(z2, actions2, rewards2, dones)
    assert th.allclose(base.z_logits[:, 2:], changed.z_logits[:, 2:], atol=1e-6)
    assert not th.allclose(base.z_logits[:, :2], changed.z_logits[:, :2])


def test_attention_window_is_memory_length_steps():
    model = tiny_model(memory_length=2)
    z, actions = random_latents(1, 6), th.randint(0, A, (1, 6))
    rewards, dones = th.randn(1, 5), th.zeros(1, 5, dtype=th.bool)
    base = model(z, actions, rewards, dones)
    z2 = z.clone()
    z2[:, 0] = random_latents(1, 1)[:, 0]
    changed = model(z2, actions, rewards, dones)
    # Step 0 lies 3+ steps behind step 3 with a 2-step window (and layers cannot relay it further than 2 per layer).
    assert th.allclose(base.z_logits[:, 5], changed.z_logits[:, 5], atol=1e-6)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="num_layers"):
        DynamicsModel(6, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        DynamicsModel(6, dropout=1.5)


def test_key_value_cache_appends_in_place_and_keeps_the_newest_tokens():
    cache = KeyValueCache(capacity=5)
    tokens = th.arange(8.0).view(1, 1, 8, 1).expand(2, 3, 8, 4)  # token t has keys t and values -t
    keys, values = cache.extend(tokens[:, :, :3], -tokens[:, :, :3])
    assert keys.shape == (2, 3, 3, 4) and th.equal(values, -tokens[:, :, :3])
    cache.keep_last(2)
    keys, values = cache.extend(tokens[:, :, 3:5], -tokens[:, :, 3:5])  # fills the buffer exactly
    assert th.equal(keys[0, 0, :, 0], th.tensor([1.0, 2.0, 3.0, 4.0]))
    cache.keep_last(3)
    keys, values = cache.extend(tokens[:, :, 5:7], -tokens[:, :, 5:7])  # moves the kept tokens to the front first
    assert th.equal(keys[0, 0, :, 0], th.tensor([2.0, 3.0, 4.0, 5.0, 6.0]))
    assert th.equal(values, -keys) and len(cache) == 5 and cache.keys.shape[2] == 5
    with pytest.raises(ValueError, match="cannot hold 5 kept and 1 new"):
        cache.extend(tokens[:, :, 7:], tokens[:, :, 7:])
