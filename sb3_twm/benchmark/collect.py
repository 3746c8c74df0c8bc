"""Env steps per second with SB3's Atari wrappers: random actions, and acting with the encoder and actor."""

import argparse
import time

import numpy as np
import torch as th

from sb3_twm import TWM
from sb3_twm.benchmark.common import add_common_arguments, report, setup_torch
from sb3_twm.common.atari import make_twm_atari_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, repeats=3, training=False)
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=500, help="env steps per repeat")


def run(args: argparse.Namespace) -> int:
    setup_torch(args)
    env = make_twm_atari_env(args.env, n_envs=1, seed=args.seed)
    model = TWM("CnnPolicy", env, seed=args.seed, device=args.device, buffer_size=5000, learning_starts=1000)
    random_rates, policy_rates = [], []
    obs = env.reset()
    for repeat in range(args.warmup + args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            obs, _, _, _ = env.step(np.array([env.action_space.sample()]))
        random_rate = args.steps / (time.perf_counter() - start)
        start = time.perf_counter()
        with th.no_grad():
            for _ in range(args.steps):
                actions, _ = model.predict(obs, deterministic=False)
                obs, _, _, _ = env.step(actions)
        policy_rate = args.steps / (time.perf_counter() - start)
        if repeat >= args.warmup:
            random_rates.append(random_rate)
            policy_rates.append(policy_rate)
    rows = [
        {"figure": "env steps/s, random actions", "seconds": random_rates, "unit": "steps/s"},
        {"figure": "env steps/s, encoder + actor (default sizes)", "seconds": policy_rates, "unit": "steps/s"},
    ]
    report("collect", rows, args, model.device)
    env.close()
    return 0
