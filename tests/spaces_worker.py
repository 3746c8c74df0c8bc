"""
Worker of ``tests/test_dataset_spaces.py``, run in its own processes (``python tests/spaces_worker.py MODE FOLDER``):

- ``reference``: for every case, ``learn(N)``, save the model, the dataset (and the ``VecNormalize`` statistics), then
  continue the same run with fresh envs: ``set_env``, ``learn(M, reset_num_timesteps=False)``; dump the final state.
- ``resume``: for every case, in a new process, load the model and the dataset saved by ``reference`` and
  ``learn(M, reset_num_timesteps=False)``; dump the final state.

A case that fails writes its error into ``FOLDER/<case>/<mode>.error`` instead of stopping the others.
"""

from __future__ import annotations

import pathlib
import sys
import traceback
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from configurations import TINY_SCHEDULE_KWARGS
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from sb3_twm import TWM

FIRST_STEPS, MORE_STEPS = 150, 30
ARRAYS = ("observations", "actions", "rewards", "terminated", "truncated", "visits", "latest_next_observations")
# The tests' tiny configuration, with a shorter prefill and pretraining: 20 cases run in two processes.
KWARGS: dict[str, Any] = dict(TINY_SCHEDULE_KWARGS, learning_starts=100, buffer_size=1000, pretrain_budget=500)
MLP_POLICY_KWARGS = dict(
    net_arch=[16], latent_categoricals=4, latent_classes=4, encoder_hidden_dims=[16], decoder_hidden_dims=[16]
)
CNN_POLICY_KWARGS = dict(net_arch=[16], latent_categoricals=4, latent_classes=4, cnn_channels=4, encoder_hidden_dims=[16])

# name -> observation space (None: the real CartPole-v1, whose bounds mix finite and infinite values)
SPACES: dict[str, spaces.Box | None] = {
    "cartpole-inf-bounds": None,
    "float32-2d-inf-bounds": spaces.Box(-np.inf, np.inf, (2, 3), np.float32),
    "float64-huge-bounds": spaces.Box(-1e300, 1e300, (3,), np.float64),
    # SpaceEnv's observations (normal, std 2) go beyond these bounds, as some envs' do: stored and loaded as they are.
    "float64-env-exceeds-bounds": spaces.Box(-1.0, 1.0, (3,), np.float64),
    "bool-grid": spaces.Box(0, 1, (10, 10, 4), bool),
    "int8": spaces.Box(-128, 127, (6,), np.int8),
    "uint8-image-channel-first": spaces.Box(0, 255, (4, 48, 48), np.uint8),
    "uint8-image-channel-last": spaces.Box(0, 255, (48, 48, 3), np.uint8),
}
FLOAT_SPACES = ("cartpole-inf-bounds", "float32-2d-inf-bounds", "float64-huge-bounds")


def case_names() -> list[str]:
    """:return: ``<space>-envs<n>[-vecnormalize]`` for every case of the matrix."""
    names = []
    for space in SPACES:
        for n_envs in (1, 2):
            names.append(f"{space}-envs{n_envs}")
            if space in FLOAT_SPACES:
                names.append(f"{space}-envs{n_envs}-vecnormalize")
    return names


def parse(case: str) -> tuple[str, int, bool]:
    """:return: Space name, number of envs, whether the envs are wrapped in ``VecNormalize``."""
    normalized = case.endswith("-vecnormalize")
    base = case.removesuffix("-vecnormalize")
    space, _, envs = base.rpartition("-envs")
    return space, int(envs), normalized


class SpaceEnv(gym.Env):
    """Observations of a given Box (moderate values, within its bounds unless they are tight), 3 actions, random ends."""

    def __init__(self, space: spaces.Box) -> None:
        self.observation_space = space
        self.action_space = spaces.Discrete(3)

    def _observation(self) -> np.ndarray:
        space, rng = self.observation_space, self.np_random
        if space.dtype == bool:
            return rng.random(space.shape) < 0.3
        if np.issubdtype(space.dtype, np.integer):
            return rng.integers(space.low, space.high, endpoint=True, dtype=space.dtype)
        return rng.normal(0.0, 2.0, space.shape).astype(space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        terminated = bool(self.np_random.random() < 0.05)
        return self._observation(), float(action == 1), terminated, False, {}


def make_env(case: str, statistics: pathlib.Path | None = None) -> VecEnv:
    """
    :param case: A case name.
    :param statistics: ``VecNormalize`` statistics to load (cases with ``VecNormalize``); None: fresh ones.
    :return: The vectorised env of the case (time limit 30 steps: truncations as well as terminations).
    """
    space_name, n_envs, normalized = parse(case)
    space = SPACES[space_name]

    def make() -> gym.Env:
        env = gym.make("CartPole-v1") if space is None else SpaceEnv(space)
        return Monitor(TimeLimit(env, 30))

    env: VecEnv = DummyVecEnv([make] * n_envs)
    if normalized:
        env = VecNormalize.load(str(statistics), env) if statistics is not None else VecNormalize(env, norm_reward=False)
    return env


def make_model(case: str, env: VecEnv) -> TWM:
    policy = "CnnPolicy" if "image" in case else "MlpPolicy"
    policy_kwargs = CNN_POLICY_KWARGS if policy == "CnnPolicy" else MLP_POLICY_KWARGS
    return TWM(policy, env, seed=3, policy_kwargs=policy_kwargs, **KWARGS)


def dump(model: TWM, path: pathlib.Path) -> None:
    state: dict[str, th.Tensor] = {}
    for prefix in ("policy", "world_model", "critic"):
        state.update({f"{prefix}.{k}": v for k, v in getattr(model, prefix).state_dict().items()})
    for index, optimizer in enumerate(model._optimizers()):
        for param_id, param_state in optimizer.state_dict()["state"].items():
            state.update({f"optimizer{index}.{param_id}.{k}": v for k, v in param_state.items()})
    for name in ARRAYS:
        state[f"dataset.{name}"] = th.as_tensor(np.asarray(getattr(model.replay_buffer, name)).astype(np.float64))
    state["counters"] = th.tensor(
        [model.num_timesteps, model._n_updates, model._episode_num, model.replay_buffer.pos], dtype=th.float64
    )
    state["rng.torch"] = th.get_rng_state()
    th.save(state, path)


def reference(case: str, folder: pathlib.Path) -> None:
    env = make_env(case)
    model = make_model(case, env)
    model.learn(FIRST_STEPS)
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "dataset.npz")
    np.savez(folder / "arrays.npz", **{name: getattr(model.replay_buffer, name) for name in ARRAYS})
    statistics = None
    if isinstance(env, VecNormalize):
        statistics = folder / "vecnormalize.pkl"
        env.save(str(statistics))
    model.set_env(make_env(case, statistics))
    model.learn(MORE_STEPS, reset_num_timesteps=False)
    dump(model, folder / "reference.pt")


def resume(case: str, folder: pathlib.Path) -> None:
    statistics = folder / "vecnormalize.pkl"
    env = make_env(case, statistics if statistics.exists() else None)
    model = TWM.load(folder / "model.zip", env=env)
    model.load_replay_buffer(folder / "dataset.npz")
    model.learn(MORE_STEPS, reset_num_timesteps=False)
    dump(model, folder / "resume.pt")


def main(mode: str, root: str) -> int:
    th.set_num_threads(1)
    th.use_deterministic_algorithms(True)
    for case in case_names():
        folder = pathlib.Path(root) / case
        folder.mkdir(parents=True, exist_ok=True)
        try:
            (reference if mode == "reference" else resume)(case, folder)
        except Exception:
            (folder / f"{mode}.error").write_text(traceback.format_exc())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
