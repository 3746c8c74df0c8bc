"""
Train TWM on Pong with the paper's default configuration (Atari 100k: 100,000 agent steps), evaluate it the Atari 100k
way (full games, sampled actions, no no-op starts) and save the model and its dataset.

This is a GPU workload (the authors report about 10 hours on an A100); on a CPU the default sizes take weeks.

    python examples/train_pong.py [--env PongNoFrameskip-v4] [--seed 0] [--output runs/pong]
"""

import argparse
import os

from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecTransposeImage

from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--output", default="runs/pong")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    env = make_twm_atari_env(args.env, n_envs=1, seed=args.seed)
    # Channels first like the training env, which TWM wraps in SB3's VecTransposeImage (EvalCallback compares them).
    eval_env = VecTransposeImage(make_twm_atari_env(args.env, n_envs=1, seed=args.seed + 1000, evaluation=True))
    model = TWM("CnnPolicy", env, seed=args.seed, device=args.device, verbose=1, tensorboard_log=args.output)
    callbacks = [
        # Every 5,000 steps, 10 full games (the paper's intermediate evaluations).
        EvalCallback(eval_env, eval_freq=5000, n_eval_episodes=10, deterministic=False, log_path=args.output),
        CheckpointCallback(save_freq=10_000, save_path=os.path.join(args.output, "checkpoints"), save_replay_buffer=True),
    ]
    model.learn(args.timesteps, callback=callbacks, progress_bar=True)
    model.save(os.path.join(args.output, "twm_final"))
    model.save_replay_buffer(os.path.join(args.output, "twm_final_dataset"))

    # The reported score: mean over 100 full games.
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=100, deterministic=False)
    print(f"{args.env}: final score {mean:.1f} +- {std:.1f} over 100 games")


if __name__ == "__main__":
    main()
