"""Tests of the TWM experience dataset (recency-balanced sequence replay buffer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from sb3_twm.common.buffers import SequenceBatch, TWMReplayBuffer

OBS_SPACE = spaces.Box(0, 255, (4, 8, 8), np.uint8)
ACT_SPACE = spaces.Discrete(3)


# Observations carry their (time, env) so sampled content and order can be asserted exactly.
def encode(t: int, env: int, terminal: bool = False) -> np.ndarray:
    obs = np.zeros(OBS_SPACE.shape, dtype=np.uint8)
    obs[0, 0, 0] = t % 256
    obs[0, 0, 1] = t // 256
    obs[0, 0, 2] = env
    obs[0, 0, 3] = int(terminal)
    return obs


def decode(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:return: time and env of observations of shape (..., 4, 8, 8)"""
    pix = obs[..., 0, 0, :].astype(np.int64)
    return pix[..., 0] + 256 * pix[..., 1], pix[..., 2]


def action_of(t, env):
    return (np.asarray(t) + np.asarray(env)) % 3


def reward_of(t, env):
    return np.asarray(t, dtype=np.float32) + 1000.0 * np.asarray(env, dtype=np.float32)


def fill(buf: TWMReplayBuffer, n_steps: int, t0: int = 0, dones=None, truncations=None) -> None:
    """Add ``n_steps`` steps; ``dones`` / ``truncations`` map time -> list of envs."""
    dones = dones or {}
    truncations = truncations or {}
    envs = np.arange(buf.n_envs)
    for t in range(t0, t0 + n_steps):
        done = np.isin(envs, dones.get(t, []))
        obs = np.stack([encode(t, e) for e in envs])
        next_obs = np.stack([encode(t + 1, e, terminal=bool(done[e])) for e in envs])
        infos = [{"TimeLimit.truncated": True} if e in truncations.get(t, []) else {} for e in envs]
        buf.add(obs, next_obs, action_of(t, envs), reward_of(t, envs), done, infos)


def make_buffer(size_per_env: int, n_envs: int = 1, **kwargs) -> TWMReplayBuffer:
    return TWMReplayBuffer(size_per_env * n_envs, OBS_SPACE, ACT_SPACE, device="cpu", n_envs=n_envs, **kwargs)


def check_batch(batch: SequenceBatch, seq_len: int, first_t: int, count: int) -> None:
    """Assert that every sequence is the consecutive data of one env; ``first_t`` is the time of logical 0."""
    b = len(batch.starts)
    assert batch.observations.shape == (b, seq_len + 2, *OBS_SPACE.shape)
    assert batch.observations.dtype == np.uint8
    for name in ("actions", "rewards", "terminated", "truncated"):
        assert getattr(batch, name).shape == (b, seq_len + 1), name
    assert batch.actions.dtype == np.int64 and batch.rewards.dtype == np.float32
    assert batch.terminated.dtype == bool and batch.truncated.dtype == bool
    assert np.all(batch.starts >= 0) and np.all(batch.starts + seq_len <= count)

    env = batch.env_indices[:, None]
    logical = batch.starts[:, None] + np.arange(-1, seq_len + 1)[None, :]
    obs_t, obs_env = decode(batch.observations)
    # Context step of a start at 0 repeats the first observation.
    np.testing.assert_array_equal(obs_t, first_t + np.maximum(logical, 0))
    np.testing.assert_array_equal(obs_env, np.broadcast_to(env, obs_env.shape))

    step_t = first_t + logical[:, :-1]
    before = logical[:, :-1] < 0
    np.testing.assert_array_equal(batch.actions, np.where(before, 0, action_of(step_t, env)))
    np.testing.assert_array_equal(batch.rewards, np.where(before, 0.0, reward_of(step_t, env)))


@pytest.mark.parametrize("n_envs", [1, 2])
def test_all_sequences_exact_content(n_envs):
    th.manual_seed(0)
    buf = make_buffer(50, n_envs)
    fill(buf, 30)
    seq_len = 5
    n_candidates = (30 - seq_len + 1) * n_envs
    # Asking for every candidate covers the clamped start and the end that needs the latest next obs.
    batch = buf.sample_sequences(n_candidates, seq_len)
    assert isinstance(batch, SequenceBatch)
    check_batch(batch, seq_len, first_t=0, count=30)
    drawn = set(zip(batch.starts.tolist(), batch.env_indices.tolist(), strict=True))
    assert drawn == {(k, e) for k in range(30 - seq_len + 1) for e in range(n_envs)}
    # The final next observation of the newest sequence comes from latest_next_observations.
    last = batch.starts == 30 - seq_len
    assert np.all(decode(batch.observations[last, -1])[0] == 30)

    small = buf.sample_sequences(4, seq_len)
    check_batch(small, seq_len, first_t=0, count=30)


def test_never_past_end_after_wraparound():
    th.manual_seed(1)
    n_envs, per_env, seq_len = 2, 10, 4
    buf = make_buffer(per_env, n_envs)
    fill(buf, 27)
    assert buf.full and buf.size() == per_env and buf.pos == 27 % per_env
    first_t = 27 - per_env  # time of the oldest stored step
    for _ in range(200):
        check_batch(buf.sample_sequences(3, seq_len), seq_len, first_t=first_t, count=per_env)
    everything = buf.sample_sequences((per_env - seq_len + 1) * n_envs, seq_len)
    check_batch(everything, seq_len, first_t=first_t, count=per_env)
    assert decode(everything.observations)[0].max() == 27  # latest next obs, nothing beyond

    with pytest.raises(ValueError, match="stored steps"):
        buf.sample_sequences(2 * (per_env - seq_len + 1) + 1, seq_len)


def test_flags_from_dones_and_timeouts():
    buf = make_buffer(20, 2)
    fill(buf, 10, dones={3: [0, 1], 6: [1]}, truncations={3: [1], 6: [1]})
    np.testing.assert_array_equal(np.argwhere(buf.terminated[:10]), [[3, 0]])
    np.testing.assert_array_equal(np.argwhere(buf.truncated[:10]), [[3, 1], [6, 1]])
    # The terminal observation survives only as the latest next obs; it is flagged in the last add.
    fill(buf, 1, t0=10, dones={10: [0]})
    assert decode(buf.latest_next_observations)[0].tolist() == [11, 11]
    assert buf.latest_next_observations[0, 0, 0, 3] == 1 and buf.latest_next_observations[1, 0, 0, 3] == 0

    th.manual_seed(0)
    batch = buf.sample_sequences(2 * 8, 4)
    for i in range(len(batch.starts)):
        t = np.maximum(batch.starts[i] + np.arange(-1, 4), 0)
        env = batch.env_indices[i]
        np.testing.assert_array_equal(batch.terminated[i], buf.terminated[t, env])
        np.testing.assert_array_equal(batch.truncated[i], buf.truncated[t, env])
    assert batch.terminated.any() and batch.truncated.any()

    no_timeouts = make_buffer(20, 2, handle_timeout_termination=False)
    fill(no_timeouts, 5, dones={3: [1]}, truncations={3: [1]})
    assert no_timeouts.terminated[3, 1] and not no_timeouts.truncated.any()


@pytest.mark.parametrize("handle_timeout_termination", [True, False])
def test_dones_and_timeouts_are_sb3s_arrays(handle_timeout_termination):
    ours = make_buffer(20, 2, handle_timeout_termination=handle_timeout_termination)
    sb3 = ReplayBuffer(40, OBS_SPACE, ACT_SPACE, device="cpu", n_envs=2, handle_timeout_termination=handle_timeout_termination)
    for buffer in (ours, sb3):
        fill(buffer, 25, dones={3: [0, 1], 6: [1], 21: [0]}, truncations={3: [1], 6: [1]})  # wraps around
    for name in ("dones", "timeouts"):
        array = getattr(ours, name)
        assert array.dtype == np.float32 and array.shape == (20, 2), name
        np.testing.assert_array_equal(array, getattr(sb3, name), err_msg=name)
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 1.0  # a derived view: writing to it would be silently lost
    # Step 6 of env 1 (truncated) and step 21 of env 0 survive the wrap; step 23 overwrote step 3.
    assert ours.dones.sum() == 2 and ours.timeouts.sum() == (1 if handle_timeout_termination else 0)


def test_recency_balanced_distribution():
    th.manual_seed(123)
    temperature = 20.0
    buf = make_buffer(10, 2, temperature=temperature)
    fill(buf, 5)
    seq_len = 3  # starts 0..2 for each env: 6 candidates
    preset = np.zeros_like(buf.visits)
    preset[:3] = [[0.0, 10.0], [20.0, 40.0], [5.0, 80.0]]
    logits = -preset[:3].reshape(-1) / temperature  # candidate order k * n_envs + env
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()

    n_draws = 10_000
    counts = np.zeros(6)
    for _ in range(n_draws):
        buf.visits[:] = preset
        batch = buf.sample_sequences(1, seq_len)
        counts[batch.starts[0] * 2 + batch.env_indices[0]] += 1

    chi2 = np.sum((counts - n_draws * expected) ** 2 / (n_draws * expected))
    try:
        from scipy.stats import chi2 as chi2_dist

        assert chi2_dist.sf(chi2, df=5) > 1e-3, (counts, expected)
    except ImportError:
        assert chi2 < 20.515, (counts, expected)  # chi-square critical value, df=5, p=0.001
    sigma = np.sqrt(expected * (1 - expected) / n_draws)
    assert np.all(np.abs(counts / n_draws - expected) < 5 * sigma + 1e-9)


def test_visits_updated_and_batch_distinct():
    th.manual_seed(0)
    buf = make_buffer(40, 2)
    fill(buf, 40)
    fill(buf, 5, t0=40)  # wrap so the start slots are not the logical indices
    batch = buf.sample_sequences(30, 6)
    pairs = list(zip(batch.starts.tolist(), batch.env_indices.tolist(), strict=True))
    assert len(set(pairs)) == 30
    expected = np.zeros_like(buf.visits)
    expected[(buf.pos + batch.starts) % buf.buffer_size, batch.env_indices] = 1
    np.testing.assert_array_equal(buf.visits, expected)

    # Overwriting a slot forgets its visits.
    slot = buf.pos
    buf.visits[slot] = 7
    fill(buf, 1, t0=45)
    assert np.all(buf.visits[slot] == 0)

    # Fresh data is preferred strongly once old data has been visited a lot.
    buf.visits[:] = 1000
    buf.visits[(buf.pos - 1) % buf.buffer_size] = 0
    buf.visits[(buf.pos - 6) % buf.buffer_size] = 0
    assert buf.sample_sequences(1, 6).starts[0] == 40 - 6


def test_seeded_sampling_is_deterministic():
    results = []
    for _ in range(2):
        np.random.seed(3)
        th.manual_seed(3)
        buf = make_buffer(30, 2)
        fill(buf, 30)
        a = buf.sample_sequences(8, 4)
        b = list(buf.uniform_sequence_batches(4, 5))
        c = buf.sample_observations(6)
        results.append((a.starts, a.env_indices, np.concatenate([x.starts for x in b]), c))
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)


def test_is_replay_buffer_single_copy_and_memory():
    buf = make_buffer(10, 2)
    assert isinstance(buf, ReplayBuffer)
    # SB3's memory-optimised layout: no second copy of the frames.
    assert buf.next_observations is None
    assert buf.optimize_memory_usage is True and buf.handle_timeout_termination is True

    big = TWMReplayBuffer(100_000, spaces.Box(0, 255, (4, 64, 64), np.uint8), spaces.Discrete(18), device="cpu")
    assert big.buffer_size == 100_000
    assert big.observations.shape == (100_000, 1, 4, 64, 64) and big.observations.dtype == np.uint8
    total = sum(
        a.nbytes
        for a in (
            big.observations,
            big.actions,
            big.rewards,
            big.terminated,
            big.truncated,
            big.visits,
            big.latest_next_observations,
        )
    )
    assert big.observations.nbytes < 2e9 and total < 2e9
    for name in ("actions", "rewards", "terminated", "truncated", "visits"):
        assert getattr(big, name).shape == (100_000, 1), name
    del big


def test_mark_episode_boundary():
    buf = make_buffer(5, 2)
    buf.mark_episode_boundary()  # empty: no-op
    assert not buf.truncated.any()
    fill(buf, 3)
    buf.mark_episode_boundary()
    np.testing.assert_array_equal(np.argwhere(buf.truncated), [[2, 0], [2, 1]])
    fill(buf, 2, t0=3)  # now full with pos == 0: the newest step is the last slot
    assert buf.full and buf.pos == 0
    buf.mark_episode_boundary()
    assert buf.truncated[4].all()
    assert not buf.terminated.any()


def test_uniform_sequence_batches_non_overlapping():
    np.random.seed(0)
    buf = make_buffer(30, 2)
    fill(buf, 23)
    seq_len, batch_size = 4, 5
    n_starts = 23 - seq_len + 1
    visits_before = buf.visits.copy()
    batches = list(buf.uniform_sequence_batches(seq_len, batch_size))
    assert all(0 < len(b.starts) <= batch_size for b in batches)
    assert all(len(b.starts) == batch_size for b in batches[:-1])
    for b in batches:
        check_batch(b, seq_len, first_t=0, count=23)
    starts = np.concatenate([b.starts for b in batches])
    envs = np.concatenate([b.env_indices for b in batches])
    for env in range(2):
        s = np.sort(starts[envs == env])
        offset = s[0]
        assert 0 <= offset < seq_len
        # Consecutive windows at stride T: no overlap, no gaps, all the way to the end.
        np.testing.assert_array_equal(s, np.arange(offset, n_starts, seq_len))
    np.testing.assert_array_equal(buf.visits, visits_before)

    with pytest.raises(ValueError, match="sequence_length"):
        buf.uniform_sequence_batches(0, 4)
    with pytest.raises(ValueError, match="at least"):
        buf.uniform_sequence_batches(24, 4)


def test_single_observation_access():
    np.random.seed(0)
    buf = make_buffer(8, 2)
    fill(buf, 11)  # wrapped: times 3..10 stored
    obs = buf.sample_observations(64)
    assert obs.shape == (64, *OBS_SPACE.shape) and obs.dtype == np.uint8
    t, _ = decode(obs)
    assert t.min() >= 3 and t.max() <= 10
    everything = buf.all_observations()
    assert everything.shape == (16, *OBS_SPACE.shape) and buf.num_stored_steps() == 16
    assert np.shares_memory(everything, buf.observations)
    t_all, env_all = decode(everything)
    assert sorted(zip(t_all.tolist(), env_all.tolist(), strict=True)) == [(t, e) for t in range(3, 11) for e in range(2)]

    partial = make_buffer(8, 2)
    fill(partial, 3)
    assert partial.all_observations().shape == (6, *OBS_SPACE.shape) and partial.num_stored_steps() == 6


def test_sb3_sample_transitions():
    np.random.seed(0)
    buf = make_buffer(6, 2)
    fill(buf, 8, dones={6: [1]}, truncations={6: [1]})
    samples = buf.sample(64)
    assert samples.observations.shape == (64, *OBS_SPACE.shape)
    assert samples.next_observations.shape == (64, *OBS_SPACE.shape)
    assert samples.actions.shape == (64, 1) and samples.rewards.shape == (64, 1) and samples.dones.shape == (64, 1)
    t, env = decode(samples.observations.numpy())
    next_t, next_env = decode(samples.next_observations.numpy())
    np.testing.assert_array_equal(next_t, t + 1)  # includes the newest step (latest next obs)
    np.testing.assert_array_equal(next_env, env)
    np.testing.assert_array_equal(samples.actions.numpy()[:, 0], action_of(t, env))
    np.testing.assert_array_equal(samples.rewards.numpy()[:, 0], reward_of(t, env))
    np.testing.assert_array_equal(samples.dones.numpy()[:, 0], ((t == 6) & (env == 1)).astype(np.float32))


def test_pickle_round_trip(tmp_path):
    th.manual_seed(0)
    buf = make_buffer(10, 2, temperature=5.0)
    fill(buf, 13, dones={11: [0]}, truncations={12: [1]})
    buf.sample_sequences(4, 3)
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buf)
    loaded = load_from_pkl(path)
    assert isinstance(loaded, TWMReplayBuffer)
    for name in ("observations", "actions", "rewards", "terminated", "truncated", "visits", "latest_next_observations"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buf, name), err_msg=name)
    assert (loaded.pos, loaded.full, loaded.temperature, loaded.buffer_size) == (buf.pos, buf.full, 5.0, 10)
    check_batch(loaded.sample_sequences(4, 3), 3, first_t=3, count=10)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="buffer_size"):
        TWMReplayBuffer(0, OBS_SPACE, ACT_SPACE)
    with pytest.raises(ValueError, match="n_envs"):
        TWMReplayBuffer(10, OBS_SPACE, ACT_SPACE, n_envs=0)
    for temperature in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            TWMReplayBuffer(10, OBS_SPACE, ACT_SPACE, temperature=temperature)
    with pytest.raises(ValueError, match="Discrete and spaces\\.Box"):
        TWMReplayBuffer(10, OBS_SPACE, spaces.MultiDiscrete([2, 2]))
    for weight in (0.0, -2.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="termination_weight"):
            TWMReplayBuffer(10, OBS_SPACE, ACT_SPACE, termination_weight=weight)

    buf = make_buffer(10)
    with pytest.raises(ValueError, match="empty"):
        buf.sample_observations(1)
    fill(buf, 4)
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample_sequences(0, 2)
    with pytest.raises(ValueError, match="sequence_length"):
        buf.sample_sequences(1, 0)
    with pytest.raises(ValueError, match="at least 5 stored steps"):
        buf.sample_sequences(1, 5)
    with pytest.raises(ValueError, match="at least 5 stored steps"):
        buf.sample_sequences(3, 3)
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample_observations(0)


def test_works_in_sb3_off_policy_loop():
    from stable_baselines3 import DQN

    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        replay_buffer_class=TWMReplayBuffer,
        buffer_size=500,
        learning_starts=50,
        batch_size=16,
        train_freq=8,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    model.learn(200)
    buf = model.replay_buffer
    assert isinstance(buf, TWMReplayBuffer) and buf.size() == 200
    assert buf.terminated.any()  # CartPole episodes terminate within 200 random-ish steps
    batch = buf.sample_sequences(4, 8)
    assert batch.observations.shape == (4, 10, 4)


def test_reward_scale_multiplies_training_rewards_before_the_transform():
    rewards = []
    for scale in (1.0, 0.1):
        buf = make_buffer(30, reward_transform="tanh", reward_scale=scale)
        for t in range(30):
            obs = np.full((1, *OBS_SPACE.shape), t, dtype=np.uint8)
            buf.add(obs, obs, np.array([0]), np.array([-8.0 + t * 0.5]), np.array([False]), [{}])
        sequences = buf._gather(np.array([3]), np.array([0]), 8)
        rewards.append(buf.to_world_model_batch(sequences).rewards)
        np.testing.assert_array_equal(buf.rewards[:30, 0], -8.0 + np.arange(30) * 0.5)  # stored raw
    raw = th.as_tensor(sequences.rewards[0])
    assert th.equal(rewards[0][0], th.tanh(raw))
    assert th.allclose(rewards[1][0], th.tanh(raw * 0.1)) and not th.allclose(rewards[0][0], rewards[1][0])
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="reward_scale"):
            make_buffer(10, reward_scale=scale)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_terminating_starts_after_wraparound(n_envs):
    # 25 steps in a ring of 12 per env: logical 0 is time 13. Env 0 terminates at times 15 and 22, env 1 at 18.
    buf = make_buffer(12, n_envs)
    fill(buf, 25, dones={15: [0], 18: [1], 22: [0]})
    seq_len = 4
    n_starts = 12 - seq_len + 1
    flags = buf._terminating_starts(n_starts, seq_len)
    assert flags.shape == (n_starts, n_envs)
    # The trained steps of start k are logical k .. k + 3 (times k + 13 .. k + 16).
    expected = {0: [k for k in range(n_starts) if any(k + 13 <= t <= k + 16 for t in (15, 22))], 1: [2, 3, 4, 5]}
    for env in range(n_envs):
        assert np.flatnonzero(flags[:, env]).tolist() == expected[env]


def test_termination_weight_draws_terminating_sequences_more_often():
    def share_terminating(weight: float) -> float:
        th.manual_seed(0)
        buf = make_buffer(400, termination_weight=weight)
        fill(buf, 400, dones={200: [0]})
        hits = 0
        for _ in range(200):
            batch = buf.sample_sequences(4, 5)
            hits += int(batch.terminated[:, 1:].any(axis=1).sum())
        return hits / 800

    # 5 of 396 starts hold the termination among their trained steps: ~1.3% of draws, ~11% at weight 10.
    assert share_terminating(1.0) < 0.04
    assert 0.07 < share_terminating(10.0) < 0.2
    # Weight 1 is the paper's sampling: the same draws as without the option.
    draws = []
    for buf in (make_buffer(50), make_buffer(50, termination_weight=1.0)):
        fill(buf, 50, dones={20: [0]})
        th.manual_seed(3)
        draws.append([buf.sample_sequences(3, 4).starts for _ in range(5)])
    np.testing.assert_array_equal(draws[0], draws[1])
