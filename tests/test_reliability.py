"""
Reliability of TWM (issue 6): exact resume across processes (save/load between learn() calls and SB3's
CheckpointCallback), atomic checkpoint files under SIGKILL, loading that never unpickles and refuses broken files
clearly without changing anything, bad input refused with a clear message, and non-finite updates skipped.
"""

import base64
import hashlib
import json
import os
import pathlib
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.logger import configure
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

import sb3_twm.twm.actor_critic as actor_critic_module
from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env
from sb3_twm.common.checkpoints import CheckpointError, atomic_write, dataset_path_for_checkpoint

TESTS = Path(__file__).resolve().parent
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SUBPROCESS_TIMEOUT = 180
ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "visits", "latest_next_observations")


class ImageEnv(gym.Env):
    """A tiny image env: random frames, reward 1 for action 1; ``bad_reward_at`` returns NaN/inf at that step."""

    def __init__(self, shape=(64, 64, 4), actions=6, bad_reward_at=None, bad_reward=float("nan")):
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(actions)
        self.bad_reward_at, self.bad_reward = bad_reward_at, bad_reward
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        self.steps += 1
        reward = self.bad_reward if self.steps == self.bad_reward_at else float(action == 1)
        return self.observation_space.sample(), reward, self.steps % 50 == 0, False, {}


class VectorEnv(ImageEnv):
    """Float vector observations; ``bad_obs_at`` returns a NaN observation at that step."""

    def __init__(self, bad_obs_at=None):
        super().__init__()
        self.observation_space = spaces.Box(-1, 1, (5,), np.float32)
        self.bad_obs_at = bad_obs_at

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps == self.bad_obs_at:
            obs = np.full(5, np.nan, np.float32)
        return obs, reward, terminated, truncated, info


class TouchOnUnpickle:
    """A pickle payload: unpickling it creates ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def state(model: TWM) -> dict[str, th.Tensor]:
    """Every parameter and optimiser-state tensor of a model, cloned."""
    named = {}
    for prefix in ("policy", "world_model", "critic"):
        named.update({f"{prefix}.{k}": v.detach().clone() for k, v in getattr(model, prefix).state_dict().items()})
    for index, optimizer in enumerate(model._optimizers()):
        for param_id, param_state in optimizer.state_dict()["state"].items():
            named.update({f"optimizer{index}.{param_id}.{k}": v.clone() for k, v in param_state.items()})
    return named


def changed(before: dict[str, th.Tensor], after: dict[str, th.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {key for key in before if not th.equal(before[key], after[key])}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ exact resume
RESUME_WORKER = textwrap.dedent(
    """
    import sys

    import numpy as np
    import torch as th

    th.set_num_threads(1)
    th.use_deterministic_algorithms(True)
    sys.path.insert(0, sys.argv[1])
    from configurations import TINY_TWM_KWARGS
    from stable_baselines3.common.callbacks import CheckpointCallback

    from sb3_twm import TWM
    from sb3_twm.common.atari import make_twm_atari_env

    KWARGS = {**TINY_TWM_KWARGS, "target_update_interval": 2}  # a separate target critic is saved too


    def make_env():
        return make_twm_atari_env("PongNoFrameskip-v4", seed=0)


    def dump(model, path):
        out = {}
        for prefix in ("policy", "world_model", "critic", "critic_target"):
            out.update({f"{prefix}.{k}": v for k, v in getattr(model, prefix).state_dict().items()})
        for index, optimizer in enumerate(model._optimizers()):
            for param_id, param_state in optimizer.state_dict()["state"].items():
                out.update({f"optimizer{index}.{param_id}.{k}": v for k, v in param_state.items()})
        buffer = model.replay_buffer
        for name in ("observations", "actions", "rewards", "terminated", "truncated", "visits", "latest_next_observations"):
            out[f"dataset.{name}"] = th.as_tensor(getattr(buffer, name))
        out["counters"] = th.tensor(
            [model.num_timesteps, model._n_updates, model._actor_critic_updates, model._pretrained, model._episode_num,
             model._skipped_updates, buffer.pos, buffer.full, model._train_credit], dtype=th.float64
        )
        out["rng.torch"] = th.get_rng_state()
        out["rng.numpy"] = th.as_tensor(np.random.get_state()[1].astype(np.int64))
        out["rng.action_space"] = th.as_tensor(model.action_space.np_random.integers(0, 2**31, 8))
        th.save(out, path)


    mode, folder = sys.argv[2], sys.argv[3]
    if mode == "reference":
        # One process, envs replaced at steps 150 and 250: what the resumed runs must reproduce.
        model = TWM("CnnPolicy", make_env(), seed=3, **KWARGS)
        model.learn(150)  # still in the random prefill (learning_starts=200)
        model.save(f"{folder}/a150.zip")
        model.save_replay_buffer(f"{folder}/a150.npz")
        model.set_env(make_env())
        checkpoints = CheckpointCallback(100, f"{folder}/checkpoints", save_replay_buffer=True)
        model.learn(100, reset_num_timesteps=False, callback=checkpoints)  # pretraining, then training
        model.set_env(make_env())
        model.learn(40, reset_num_timesteps=False)
        dump(model, f"{folder}/reference.pt")
    else:
        model_path, dataset_path, steps, out = sys.argv[4:8]
        model = TWM.load(model_path, env=make_env())
        model.load_replay_buffer(dataset_path)
        model.learn(int(steps), reset_num_timesteps=False)
        if out.endswith(".pt"):
            dump(model, out)
        else:
            model.save(f"{out}.zip")
            model.save_replay_buffer(f"{out}.npz")
    """
)


def test_exact_resume_across_processes(tmp_path):
    """
    learn(150), set_env, learn(100), set_env, learn(40) in one process equals, bit for bit (parameters, optimiser
    states, dataset, counters, RNG states): the same run saved and loaded into a new process at steps 150 (prefill)
    and 250 (after pretraining), and a run resumed from CheckpointCallback's checkpoint at step 250 (saved mid-learn).
    """
    script = tmp_path / "worker.py"
    script.write_text(RESUME_WORKER)

    def start(*args: str) -> subprocess.Popen:
        command = [sys.executable, str(script), str(TESTS), *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        return subprocess.Popen(command, cwd=tmp_path, env=SUBPROCESS_ENV, text=True, **pipes)

    def finish(process: subprocess.Popen) -> None:
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert process.returncode == 0, stderr[-4000:]

    finish(start("reference", str(tmp_path)))
    finish(start("resume", str(tmp_path), "a150.zip", "a150.npz", "100", "a250"))
    checkpoint = tmp_path / "checkpoints" / "rl_model_250_steps.zip"
    dataset = dataset_path_for_checkpoint(checkpoint)
    assert dataset == tmp_path / "checkpoints" / "rl_model_replay_buffer_250_steps.pkl"
    resumed = start("resume", str(tmp_path), "a250.zip", "a250.npz", "40", "resumed.pt")
    from_callback = start("resume", str(tmp_path), str(checkpoint), str(dataset), "40", "from_callback.pt")
    finish(resumed)
    finish(from_callback)

    reference = th.load(tmp_path / "reference.pt", weights_only=True)
    counters = reference["counters"].tolist()
    assert counters[:4] == [290, 22, 44, 1]  # steps, updates (90 * 0.25), actor-critic updates, pretrained
    for name in ("resumed.pt", "from_callback.pt"):
        other = th.load(tmp_path / name, weights_only=True)
        assert other.keys() == reference.keys()
        different = sorted(changed(reference, other))
        assert not different, f"{name} differs from the uninterrupted run in {different[:10]}"


def test_checkpoint_saved_by_a_callback_holds_the_step_it_counts(pong_env, tiny_kwargs, tmp_path):
    from stable_baselines3.common.callbacks import CheckpointCallback

    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.learn(210, callback=CheckpointCallback(205, str(tmp_path), save_replay_buffer=True))
    loaded = TWM.load(tmp_path / "rl_model_205_steps.zip")
    assert loaded.num_timesteps == 205 and loaded._untrained_env_steps == 1  # the training of step 205 is owed
    loaded.set_env(pong_env)
    loaded.load_replay_buffer(tmp_path / "rl_model_replay_buffer_205_steps.pkl")
    assert loaded.replay_buffer.size() == 205
    assert model._untrained_env_steps == 0  # a finished learn() owes nothing


# ------------------------------------------------------------------------------------------------ atomic writes
KILL_WORKER = textwrap.dedent(
    """
    import sys
    import time

    import numpy as np
    import torch as th

    th.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    from configurations import TINY_TWM_KWARGS

    from sb3_twm import TWM
    from sb3_twm.common.atari import make_twm_atari_env

    what, folder = sys.argv[2], sys.argv[3]
    model = TWM("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), seed=0, **TINY_TWM_KWARGS)
    buffer, rng = model.replay_buffer, np.random.default_rng(0)


    def collect(steps):
        buffer.observations[:steps] = rng.integers(0, 256, buffer.observations[:steps].shape, dtype=np.uint8)
        buffer.pos = steps
        model.num_timesteps = steps


    collect(100)
    model.save(f"{folder}/model.zip")
    model.save_replay_buffer(f"{folder}/dataset.npz")
    print("SAVED", flush=True)
    collect(1900)  # 30 MB of frames


    def hang_midway(original):
        calls = []

        def write(*args, **kwargs):
            calls.append(None)
            if len(calls) == 2:  # the first part of the file is written: write half of this one, then hang
                if what == "dataset":
                    fp, array = args[:2]
                    original(fp, array[: len(array) // 2], **kwargs)
                print("WRITING", flush=True)
                time.sleep(600)
            return original(*args, **kwargs)

        return write


    if what == "model":
        th.save = hang_midway(th.save)
        model.save(f"{folder}/model.zip")
    else:
        np.lib.format.write_array = hang_midway(np.lib.format.write_array)
        model.save_replay_buffer(f"{folder}/dataset.npz")
    """
)


@pytest.mark.parametrize("what", ["model", "dataset"])
def test_kill_while_saving_keeps_the_previous_checkpoint(what, tmp_path, pong_env, tiny_kwargs):
    script = tmp_path / "worker.py"
    script.write_text(KILL_WORKER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(TESTS), what, str(tmp_path)],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    output = b""
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while b"WRITING\n" not in output and time.monotonic() < deadline:
            # Unbuffered reads: a line already read into a Python buffer would not wake select().
            if select.select([process.stdout], [], [], 1.0)[0]:
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                output += chunk
        failure = process.stderr.read().decode() if process.poll() is not None else output
        assert output.split() == [b"SAVED", b"WRITING"], failure
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    target = tmp_path / ("model.zip" if what == "model" else "dataset.npz")
    leftovers = list(tmp_path.glob(f".{target.name}.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the interrupted write, never renamed
    if what == "model":
        assert TWM.load(target).num_timesteps == 100
    else:
        model = TWM("CnnPolicy", pong_env, **tiny_kwargs)
        model.load_replay_buffer(target)
        assert model.replay_buffer.size() == 100


def test_atomic_write_failure_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as file:
            file.write(b"new, partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.bin"]
    with atomic_write(tmp_path / "sub" / "new.bin") as file:
        file.write(b"new")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert (tmp_path / "sub" / "new.bin").stat().st_mode == plain.stat().st_mode  # not mkstemp's owner-only mode


# ------------------------------------------------------------------------------------------------ safe loading
def test_checkpoint_data_is_plain_json_and_round_trips(pong_env, tiny_kwargs, tmp_path):
    tiny_kwargs["policy_kwargs"]["activation_fn"] = nn.ReLU
    schedule = LinearSchedule(1e-4, 1e-5, 0.5)
    model = TWM("CnnPolicy", pong_env, seed=0, learning_rate=schedule, train_freq=(1, "step"), **tiny_kwargs)
    model.learn(60)
    model.save(tmp_path / "model")  # SB3's rule: .zip appended
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        text = archive.read("data").decode()
    assert ":serialized:" not in text
    json.loads(text)
    loaded = TWM.load(tmp_path / "model", env=pong_env)
    assert loaded.policy.activation_fn is nn.ReLU and loaded.policy_class is type(model.policy)
    assert isinstance(loaded.learning_rate, LinearSchedule) and vars(loaded.learning_rate) == vars(schedule)
    assert loaded.lr_schedule(0.75) == model.lr_schedule(0.75)
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.train_freq == model.train_freq and loaded.ep_info_buffer.maxlen == model.ep_info_buffer.maxlen
    assert list(loaded.ep_info_buffer) == list(model.ep_info_buffer)
    assert not changed(state(model), state(loaded))


def test_loading_never_unpickles(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.save(tmp_path / "model.zip")
    marker = tmp_path / "code-ran"
    payload = {":type:": "x", ":serialized:": base64.b64encode(pickle.dumps(TouchOnUnpickle(marker))).decode()}

    def rewrite(path: Path, **items) -> Path:
        with zipfile.ZipFile(tmp_path / "model.zip") as source, zipfile.ZipFile(path, "w") as target:
            for entry in source.namelist():
                content = source.read(entry)
                if entry == "data":
                    content = json.dumps({**json.loads(content), **items}).encode()
                target.writestr(entry, content)
        return path

    evil = rewrite(tmp_path / "evil.zip", observation_space=payload)
    with pytest.raises(CheckpointError, match=r"evil\.zip holds pickled attributes \['observation_space'\]"):
        TWM.load(evil)
    assert not marker.exists()
    # A pickled run-time attribute is dropped, not unpickled.
    assert TWM.load(rewrite(tmp_path / "dropped.zip", _last_obs=payload)).num_timesteps == 0
    assert not marker.exists()
    load_from_zip_file(evil)  # SB3's own loader would run it: the payload is real
    assert marker.exists()


def test_callable_learning_rate_must_be_given_again(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, learning_rate=lambda progress: 1e-4 * progress, **tiny_kwargs)
    with pytest.warns(UserWarning, match=r"could not store \['learning_rate'\]"):
        model.save(tmp_path / "model.zip")
    message = r"attribute 'learning_rate' was a function \(<function .* custom_objects=\{'learning_rate': \.\.\.\}"
    with pytest.raises(CheckpointError, match=message):
        TWM.load(tmp_path / "model.zip")
    loaded = TWM.load(tmp_path / "model.zip", custom_objects={"learning_rate": lambda progress: 2e-4 * progress})
    assert loaded.lr_schedule(1.0) == 2e-4
    # An attribute the model is not built from is left out instead (here one that shadows a method).
    loaded.learn = lambda *args, **kwargs: None
    with pytest.warns(UserWarning, match=r"could not store \['learn', 'learning_rate'\]"):
        loaded.save(tmp_path / "patched.zip")
    with pytest.warns(UserWarning, match=r"the attributes \['learn'\] cannot be restored from the file and are left out"):
        again = TWM.load(tmp_path / "patched.zip", custom_objects={"learning_rate": 1e-4})
    assert "learn" not in vars(again) and again.learn.__func__ is TWM.learn


def write_truncated_and_corrupted(path: Path, member: str, header_bytes: int) -> None:
    """
    Next to a zip file ``path``, write ``truncated<suffix>`` (its first half) and ``corrupted<suffix>`` (one byte
    flipped inside ``member``'s data, past its local header of at most ``header_bytes``).
    """
    content = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    path.with_name(f"truncated{path.suffix}").write_bytes(content[: len(content) // 2])
    flipped = bytearray(content)
    flipped[info.header_offset + header_bytes + info.compress_size // 2] ^= 0xFF
    path.with_name(f"corrupted{path.suffix}").write_bytes(bytes(flipped))


def test_broken_checkpoints_are_refused_clearly(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.save(tmp_path / "model.zip")
    write_truncated_and_corrupted(tmp_path / "model.zip", "policy.pth", header_bytes=100)
    (tmp_path / "random.zip").write_bytes(np.random.default_rng(0).bytes(1000))
    DQN("MlpPolicy", "CartPole-v1", buffer_size=100, learning_starts=0).save(tmp_path / "dqn.zip")
    cases = {
        "truncated.zip": "not a complete zip file",
        "corrupted.zip": "is corrupted: member 'policy.pth' fails its CRC check",
        "random.zip": "not a complete zip file",
        "dqn.zip": "holds pickled attributes",
    }
    rng_before = th.get_rng_state()
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=f"{name}.*{message}"):
            TWM.load(tmp_path / name, env=pong_env)
        assert th.equal(th.get_rng_state(), rng_before)


def test_env_not_matching_the_checkpoint_is_refused_clearly(pong_env, tiny_kwargs, tmp_path):
    TWM("CnnPolicy", pong_env, **tiny_kwargs).save(tmp_path / "pong.zip")
    cases = [
        (
            make_twm_atari_env("PongNoFrameskip-v4", frame_stack=3),
            r"images with 4 channels \(e.g. 4 stacked frames\), the env gives 3",
        ),
        (make_twm_atari_env("BreakoutNoFrameskip-v4"), r"trained with 6 actions \(Discrete\(6\)\), the env has Discrete\(4\)"),
        (
            make_twm_atari_env("PongNoFrameskip-v4", wrapper_kwargs={"screen_size": 84}),
            r"shape \(4, 64, 64\), the env gives \(4, 84, 84\)",
        ),
    ]
    rng_before = th.get_rng_state()
    for env, message in cases:
        with pytest.raises(ValueError, match=message):
            TWM.load(tmp_path / "pong.zip", env=env)
        assert th.equal(th.get_rng_state(), rng_before)
        env.close()


def test_dataset_is_a_plain_npz_and_round_trips_a_wrapped_ring(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **{**tiny_kwargs, "buffer_size": 210})
    rng = np.random.default_rng(0)
    buffer = model.replay_buffer
    for step in range(250):  # wraps around the 210-step ring
        obs = rng.integers(0, 256, (1, *buffer.obs_shape), dtype=np.uint8)
        buffer.add(obs, obs + 1, rng.integers(6, size=1), rng.normal(size=1), [step % 60 == 59], [{}])
    buffer.visits[:] = rng.integers(0, 5, buffer.visits.shape)
    model.num_timesteps = 250
    model.save_replay_buffer(tmp_path / "dataset")  # .npz appended
    with np.load(tmp_path / "dataset.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"metadata", *ARRAYS}
        metadata = json.loads(npz["metadata"].tobytes())
    assert metadata["format"] == "sb3-twm-dataset" and metadata["version"] == 1
    assert (metadata["pos"], metadata["full"], metadata["n_envs"], metadata["buffer_size"]) == (40, True, 1, 210)
    other = TWM("CnnPolicy", pong_env, seed=1, **{**tiny_kwargs, "buffer_size": 210})
    other.num_timesteps = 250
    other.load_replay_buffer(tmp_path / "dataset")
    loaded = other.replay_buffer
    assert (loaded.pos, loaded.full) == (buffer.pos, buffer.full)
    for name in ARRAYS:
        assert np.array_equal(getattr(loaded, name), getattr(buffer, name)), name


def test_broken_datasets_are_refused_clearly_and_change_nothing(pong_env, tiny_kwargs, tmp_path):
    model = TWM("CnnPolicy", pong_env, seed=0, **tiny_kwargs)
    model.learn(20)
    model.save_replay_buffer(tmp_path / "good.npz")
    write_truncated_and_corrupted(tmp_path / "good.npz", "observations.npy", header_bytes=200)
    (tmp_path / "pickled.pkl").write_bytes(pickle.dumps(TouchOnUnpickle(tmp_path / "code-ran")))
    np.savez(tmp_path / "objects.npz", metadata=np.array([{"format": "sb3-twm-dataset"}], dtype=object))
    np.savez(tmp_path / "foreign.npz", observations=np.zeros((3, 4)))
    with np.load(tmp_path / "good.npz") as npz:
        arrays = dict(npz)
    metadata = json.loads(arrays["metadata"].tobytes())
    for name, change in (("future", {"version": 99}), ("other_buffer", {"buffer_size": 1000})):
        changed_metadata = np.frombuffer(json.dumps({**metadata, **change}).encode(), np.uint8)
        np.savez(tmp_path / f"{name}.npz", **{**arrays, "metadata": changed_metadata})
    np.savez(tmp_path / "bad_actions.npz", **{**arrays, "actions": arrays["actions"] + 6})
    three_channels = TWM("CnnPolicy", ImageEnv((64, 64, 3)), **tiny_kwargs)
    three_channels.save_replay_buffer(tmp_path / "three_channels.npz")
    two_envs = TWM("CnnPolicy", DummyVecEnv([ImageEnv, ImageEnv]), **tiny_kwargs)
    two_envs.save_replay_buffer(tmp_path / "two_envs.npz")
    cases = {
        "truncated.npz": "not a complete .npz/zip file",
        "corrupted.npz": "array 'observations' is corrupted",
        "pickled.pkl": "is a pickle file, not a TWM dataset",
        "objects.npz": "holds Python objects",
        "foreign.npz": "array 'metadata' is missing",
        "future.npz": "format version 99 is not supported",
        "other_buffer.npz": "holds up to 1000 steps per env, the model's buffer_size gives 2000",
        "bad_actions.npz": "actions outside the action space",
        "three_channels.npz": r"observations are Box\(0, 255, \(3, 64, 64\), uint8\)",
        "two_envs.npz": "collected with 2 envs, the model has 1",
    }
    buffer = model.replay_buffer
    before = {name: getattr(buffer, name).copy() for name in ("observations", "actions", "visits")}
    for name, message in cases.items():
        on_disk = digest(tmp_path / name)
        with pytest.raises(CheckpointError, match=f"{name}.*{message}"):
            model.load_replay_buffer(tmp_path / name)
        assert model.replay_buffer is buffer and buffer.pos == 20 and digest(tmp_path / name) == on_disk
        assert all(np.array_equal(getattr(buffer, key), value) for key, value in before.items())
    assert not (tmp_path / "code-ran").exists()


def test_dataset_with_non_finite_observations_is_refused(tiny_kwargs, tmp_path):
    model = TWM("MlpPolicy", VectorEnv(), **tiny_kwargs)
    model.learn(10)
    model.replay_buffer.observations[3, 0, 0] = np.nan
    model.save_replay_buffer(tmp_path / "nan.npz")
    with pytest.raises(CheckpointError, match=r"nan\.npz: the dataset holds non-finite observations"):
        model.load_replay_buffer(tmp_path / "nan.npz")


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "env, kwargs, message",
    [
        (ImageEnv((64, 4, 64)), {}, r"shape \(64, 4, 64\): its smallest axis is in the middle"),
        (ImageEnv(), {"buffer_size": -5}, "buffer_size must be a positive integer, got -5"),
        (ImageEnv(), {"sequence_length": 0}, "sequence_length must be a positive integer"),
        (ImageEnv(), {"world_model_train_steps": 0}, "world_model_train_steps must be a positive integer"),
        (ImageEnv(), {"imagination_batch_size": 0}, "imagination_batch_size must be a positive integer"),
        (ImageEnv(), {"learning_starts": -1}, "learning_starts must be >= 0"),
        (ImageEnv(), {"train_freq": 0}, "train_freq must be a positive number of steps"),
        (ImageEnv(), {"gradient_steps": -3}, "gradient_steps must be >= 0, or -1"),
        (ImageEnv(), {"stats_window_size": 0}, "stats_window_size must be a positive integer"),
        (ImageEnv(), {"world_model_kwargs": {"z_head_dims": [0]}}, r"world_model_kwargs\['z_head_dims'\] must be a list"),
        (ImageEnv(), {"world_model_kwargs": {"reward_coef": -1.0}}, r"world_model_kwargs\['reward_coef'\] must be a finite"),
        (ImageEnv(), {"policy_kwargs": {"net_arch": [64, 0]}}, r"policy_kwargs\['net_arch'\] must be a list of positive"),
        (ImageEnv(), {"policy_kwargs": {"net_arch": {"pi": [64], "vf": [-1]}}}, "policy_kwargs net_arch 'vf' must be a list"),
        (ImageEnv(), {"policy_kwargs": {"encoder_hidden_dims": [0]}}, r"policy_kwargs\['encoder_hidden_dims'\] must be"),
    ],
)
def test_more_invalid_input_is_refused_with_a_clear_message(env, kwargs, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        TWM("CnnPolicy", env, **{**tiny_kwargs, **kwargs})


@pytest.mark.parametrize("bad_reward", [float("nan"), float("inf")])
def test_non_finite_rewards_are_refused_at_collection(bad_reward, tiny_kwargs):
    model = TWM("CnnPolicy", ImageEnv(bad_reward_at=7, bad_reward=bad_reward), **tiny_kwargs)
    with pytest.raises(ValueError, match=rf"non-finite reward \({bad_reward}\) at step 7 \(env 0\)"):
        model.learn(20)
    assert model.replay_buffer.size() == 6  # the bad step is not stored


def test_non_finite_observations_are_refused_at_collection(tiny_kwargs):
    model = TWM("MlpPolicy", VectorEnv(bad_obs_at=3), **tiny_kwargs)
    with pytest.raises(ValueError, match=r"non-finite observation at step 3 \(env 0\)"):
        model.learn(20)


def test_learning_starts_beyond_total_timesteps_warns(tiny_kwargs):
    model = TWM("CnnPolicy", ImageEnv(), **tiny_kwargs)
    with pytest.warns(UserWarning, match="ends at step 150, not past learning_starts=200: this call only collects"):
        model.learn(150)
    with pytest.warns(UserWarning, match="ends at step 200, not past learning_starts=200"):
        model.learn(50, reset_num_timesteps=False)


def test_restarting_the_step_counter_of_a_trained_model_warns(tiny_kwargs):
    model = TWM("CnnPolicy", ImageEnv(), **tiny_kwargs)
    model._pretrained = True
    with pytest.warns(UserWarning, match="restarts its step counter"):
        model.learn(1)


# ------------------------------------------------------------------------------------------------ numerical faults
@pytest.fixture
def trained(tiny_kwargs, tmp_path) -> TWM:
    """A tiny TWM past its pretraining, with a logger."""
    model = TWM("CnnPolicy", ImageEnv(), seed=0, **tiny_kwargs)
    model.learn(204)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    return model


def test_non_finite_world_model_loss_skips_the_update(trained, monkeypatch):
    to_world_model_batch = trained.replay_buffer.to_world_model_batch

    def nan_rewards(batch, env=None):
        tensors = to_world_model_batch(batch, env)
        return tensors._replace(rewards=tensors.rewards * float("nan"))

    monkeypatch.setattr(trained.replay_buffer, "to_world_model_batch", nan_rewards)
    before = state(trained)
    with pytest.warns(RuntimeWarning, match="skipped an update of the dynamics model"):
        trained.train(gradient_steps=4, batch_size=trained.batch_size)  # 4 env steps * 0.25 = one training step
    assert trained._n_updates == 2 and trained._skipped_updates == 2  # dynamics and observation model
    assert trained.logger.name_to_value["train/skipped_updates"] == 2
    assert not changed(before, state(trained))  # nor the actor-critic: imagination from that batch is skipped
    monkeypatch.undo()
    trained.train(gradient_steps=4, batch_size=trained.batch_size)
    after = state(trained)
    assert changed(before, after) and all(th.isfinite(value).all() for value in after.values() if value.is_floating_point())


def test_non_finite_critic_loss_skips_only_the_critic_update(trained, monkeypatch):
    critic_loss = actor_critic_module.critic_loss
    monkeypatch.setattr(actor_critic_module, "critic_loss", lambda *args: critic_loss(*args) * float("nan"))
    before = state(trained)
    with pytest.warns(RuntimeWarning, match="skipped an update of the critic"):
        trained.train(gradient_steps=4, batch_size=trained.batch_size)
    assert trained._skipped_updates == 1
    different = changed(before, state(trained))
    critic = {key for key in before if key.startswith("critic.") or key.startswith("optimizer3.")}
    assert not different & critic
    assert any(key.startswith("policy.actor") for key in different) and any(key.startswith("world_model") for key in different)
