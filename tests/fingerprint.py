"""
Fingerprints of seeded tiny ``learn()`` runs: a SHA-256 per part of everything a run computes (parameters, optimiser
states, dataset arrays, logged values, counters), to check that a change which must not change any number does not.

The digests depend on the CPU's kernels and the torch version, so they are recorded with the machine they were
measured on (``tests/fixtures/fingerprints.json``); ``tests/test_fingerprint.py`` compares only on the same machine.

``python tests/fingerprint.py --write`` records them for this machine; without ``--write`` it prints the comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import platform
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import sb3_twm
from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from configurations import TINY_MLP_POLICY_KWARGS, TINY_POLICY_KWARGS, TINY_SCHEDULE_KWARGS

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "fingerprints.json"

TINY = TINY_SCHEDULE_KWARGS
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "cnn-pong": {
        "policy": "CnnPolicy",
        "timesteps": 400,
        "kwargs": dict(TINY, policy_kwargs=TINY_POLICY_KWARGS),
    },
    "mlp-cartpole": {
        "policy": "MlpPolicy",
        "timesteps": 600,
        "kwargs": dict(
            TINY,
            target_update_interval=3,
            policy_kwargs=TINY_MLP_POLICY_KWARGS,
        ),
    },
    "mlp-cartpole-vecnormalize-2envs": {
        "policy": "MlpPolicy",
        "timesteps": 700,
        "kwargs": dict(
            TINY,
            world_model_train_steps=2,
            normalize_advantage=True,
            policy_kwargs=TINY_MLP_POLICY_KWARGS,
        ),
    },
}


class _Recorder(KVWriter):
    """Keeps every logged value except wall-clock ones."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        if "pretrain/phase" in key_values:
            return  # pretraining's progress lines: how many come depends on the wall clock
        row = {key: value for key, value in key_values.items() if not key.startswith("time/")}
        self.rows.append({"step": step, **{key: float(value) for key, value in sorted(row.items())}})

    def close(self) -> None:
        pass


def _digest(*arrays: Any) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if isinstance(array, th.Tensor):
            array = array.detach().cpu().contiguous().numpy()
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _state_digest(state: Any) -> str:
    # Nested optimiser/module state: tensors and numbers in a fixed (sorted) order.
    leaves: list[Any] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                leaves.append(np.frombuffer(str(key).encode(), dtype=np.uint8))
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, th.Tensor):
            leaves.append(value)
        elif isinstance(value, (bool, int, float)) or value is None:
            leaves.append(np.frombuffer(repr(value).encode(), dtype=np.uint8))

    visit(state)
    return _digest(*leaves)


def make_env(name: str) -> Any:
    if name == "cnn-pong":
        return make_twm_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0)
    if name == "mlp-cartpole-vecnormalize-2envs":
        return VecNormalize(DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))] * 2), norm_reward=True)
    return gym.make("CartPole-v1")


def fingerprint(name: str) -> dict[str, str]:
    """
    :param name: A key of ``CONFIGURATIONS``.
    :return: Part -> digest for a seeded tiny ``learn()`` of that configuration.
    """
    configuration = CONFIGURATIONS[name]
    th.manual_seed(0)
    env = make_env(name)
    model = TWM(configuration["policy"], env, seed=7, **configuration["kwargs"])
    recorder = _Recorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    model.learn(configuration["timesteps"], log_interval=1)
    model.dump_logs()
    parts: dict[str, str] = {}
    modules = {"policy": model.policy, "world_model": model.world_model, "critic": model.critic}
    if model.critic_target is not model.critic:
        modules["critic_target"] = model.critic_target
    for module_name, module in modules.items():
        parts[f"parameters/{module_name}"] = _state_digest(module.state_dict())
    optimizers = {
        "observation": model.world_model.observation_optimizer,
        "dynamics": model.world_model.dynamics_optimizer,
        "actor": model.actor_optimizer,
        "critic": model.critic_optimizer,
    }
    for optimizer_name, optimizer in optimizers.items():
        parts[f"optimizer/{optimizer_name}"] = _state_digest(optimizer.state_dict())
    buffer = model.replay_buffer
    for array in ("observations", "actions", "rewards", "terminated", "truncated", "visits", "latest_next_observations"):
        parts[f"dataset/{array}"] = _digest(getattr(buffer, array))
    parts["logged"] = hashlib.sha256(json.dumps(recorder.rows, sort_keys=True).encode()).hexdigest()[:32]
    parts["counters"] = hashlib.sha256(
        json.dumps([model.num_timesteps, model._n_updates, model._episode_num, buffer.pos, buffer.full]).encode()
    ).hexdigest()[:32]
    parts["rng/torch"] = _digest(th.get_rng_state())
    parts["rng/numpy"] = _digest(np.random.get_state(legacy=True)[1])
    if hasattr(env, "close"):
        env.close()
    return parts


def machine() -> dict[str, str]:
    """:return: What the digests depend on: CPU model, torch and its CPU kernels, numpy."""
    model_name = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model_name,
        "cpu_capability": th.backends.cpu.get_cpu_capability(),
        "torch": th.__version__,
        "numpy": np.__version__,
        "threads": str(th.get_num_threads()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="record the fingerprints of this machine")
    parser.add_argument("--only", nargs="*", default=None, help="configurations to run (default: all)")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    current = {name: fingerprint(name) for name in (args.only or CONFIGURATIONS)}
    if args.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        recorded = json.loads(FIXTURE.read_text()) if FIXTURE.exists() and args.only else {"fingerprints": {}}
        fingerprints = {**recorded["fingerprints"], **current}
        FIXTURE.write_text(json.dumps({"machine": machine(), "fingerprints": fingerprints}, indent=2) + "\n")
        print(f"wrote {FIXTURE}")
        return 0
    recorded = json.loads(FIXTURE.read_text())
    print("recorded on", recorded["machine"], "\nthis machine", machine(), "\nsb3_twm from", sb3_twm.__file__)
    same = True
    for name, parts in current.items():
        for part, digest in parts.items():
            expected = recorded["fingerprints"][name].get(part)
            status = "equal" if digest == expected else "DIFFERENT"
            same &= digest == expected
            print(f"{name:14} {part:32} {status}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
