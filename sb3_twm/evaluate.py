"""
``python -m sb3_twm.evaluate``: the final evaluation of a trained TWM agent with the Atari 100k protocol of TWM's paper,
written as one JSON file per (game, run) that ``python -m sb3_twm.report`` reads.

The protocol (jrobine/twm, ``trainer.py`` ``_evaluate``): full games (the episode ends when the game does, not at a
life loss), the sum of raw rewards as the score, no sticky actions, no random no-ops at reset, ALE's cap of 108,000
frames per game (27,000 agent steps), and actions sampled from the actor (``deterministic=False``), 100 episodes.

Examples::

    python -m sb3_twm.evaluate --folder logs/ --env BreakoutNoFrameskip-v4 --exp-id 3 --run-name seed3 --out results/
    python -m sb3_twm.evaluate --model twm_pong.zip --env PongNoFrameskip-v4 --episodes 10 --out results/
"""

import json
import pathlib
import sys
import time
from typing import Any

from sb3_twm.zoo.runs import model_parser
from sb3_twm.zoo.runs import model_path as find_model

__all__ = ["EVALUATION_FORMAT", "PROTOCOL", "evaluate_model", "evaluation_env", "main"]

EVALUATION_FORMAT = "sb3-twm-evaluation"
EVALUATION_FORMAT_VERSION = 1
# What every result file records of how it was measured.
PROTOCOL: dict[str, Any] = {
    "full_game": True,
    "sticky_actions": 0.0,
    "noop_max": 0,
    "frame_skip": 4,
    "max_frames_per_game": 108_000,
    "deterministic": False,
}


def evaluation_env(env_id: str, n_envs: int = 1, seed: int = 0) -> Any:
    """
    :param env_id: An ALE game id.
    :param n_envs: Number of envs.
    :param seed: Seed of the first env (the others get ``seed + i``).
    :return: TWM's Atari envs with the evaluation protocol: no no-ops at reset, no sticky actions, full games (SB3's
        ``Monitor`` under the life-loss wrapper records whole games), ALE's cap of 108,000 frames per game.
    """
    from sb3_twm.common.atari import make_twm_atari_env

    # No sticky actions: make_twm_atari_env's default. The frame cap is ALE's default too, stated here as the protocol's.
    env_kwargs = {"max_num_frames_per_episode": PROTOCOL["max_frames_per_game"]}
    return make_twm_atari_env(env_id, n_envs=n_envs, seed=seed, evaluation=True, env_kwargs=env_kwargs)


def evaluate_model(
    model: Any,
    env_id: str,
    episodes: int = 100,
    seed: int = 0,
    n_envs: int = 1,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """
    Evaluate ``model`` on ``env_id`` with the Atari 100k protocol (see the module docstring).

    :param model: A trained TWM (or any SB3 model for TWM's Atari observations).
    :param env_id: An ALE game id (``PongNoFrameskip-v4``, ``ALE/Pong-v5``).
    :param episodes: Full games to play.
    :param seed: Seed of the evaluation envs (the first env; the others get ``seed + i``) and of the actions.
    :param n_envs: Envs played in parallel (SB3's ``evaluate_policy`` splits the games evenly among them).
    :param progress_bar: Show a progress bar of the finished games (tqdm).
    :return: The result: ``scores`` and ``lengths`` (frames) of every game, the game, the model's env steps, the
        protocol's settings, and the seconds it took.
    """
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.utils import set_random_seed

    from sb3_twm.report.scores import game_name

    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes} and {n_envs}.")
    game = game_name(env_id)
    env = evaluation_env(env_id, n_envs, seed)
    set_random_seed(seed)
    started = time.perf_counter()
    bar = _progress(episodes) if progress_bar else None

    def count_finished_games(local: dict[str, Any], _: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(sum(local["episode_counts"]) - bar.n)

    try:
        scores, lengths = evaluate_policy(
            model,
            env,
            n_eval_episodes=episodes,
            deterministic=PROTOCOL["deterministic"],
            callback=count_finished_games,
            return_episode_rewards=True,
        )
    finally:
        env.close()
        if bar is not None:
            bar.close()
    return {
        "format": EVALUATION_FORMAT,
        "version": EVALUATION_FORMAT_VERSION,
        "game": game,
        "env_id": env_id,
        "algorithm": type(model).__name__,
        "model_steps": int(getattr(model, "num_timesteps", 0)),
        "scores": [float(score) for score in scores],
        "lengths": [int(length) for length in lengths],
        "seed": seed,
        "n_envs": n_envs,
        "protocol": dict(PROTOCOL),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _progress(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        raise ImportError("--progress-bar needs tqdm: pip install tqdm (or the package's 'extra' extra)") from error
    return tqdm(total=total, unit="game", desc="evaluation")


def main(argv: list[str] | None = None) -> int:
    """
    The command line (see the module docstring).

    :param argv: The arguments (default: ``sys.argv[1:]``).
    :return: The exit status.
    """
    parser = model_parser("python -m sb3_twm.evaluate", __doc__, "ALE game id, e.g. PongNoFrameskip-v4")
    parser.add_argument("--episodes", "-n", type=int, default=100, help="full games to play")
    parser.add_argument("--n-envs", type=int, default=1, help="envs played in parallel")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs and actions")
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--out", "-o", type=pathlib.Path, default=pathlib.Path("results"), help="output folder")
    parser.add_argument("--run-name", help="name of the run in the report (default: the zoo run folder or model file)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing result file")
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from sb3_twm import TWM
    from sb3_twm.report.scores import game_name

    try:
        game = game_name(args.env)
    except ValueError as error:
        parser.error(str(error))
    model_path, run = find_model(args, parser)
    run = args.run_name or run
    path = args.out / f"{game}_{run}.json"
    if path.exists() and not args.force:
        parser.error(f"{path} exists: give this run its own --run-name (e.g. its seed), or --force to replace it")
    model = TWM.load(model_path, device=args.device)
    print(f"Evaluating {model_path} ({model.num_timesteps} env steps) on {args.env}: {args.episodes} full games")
    result = evaluate_model(model, args.env, args.episodes, args.seed, args.n_envs, not args.no_progress_bar)
    result["model"] = str(model_path)
    result["run"] = run
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    scores = result["scores"]
    print(f"{game}: mean {sum(scores) / len(scores):.2f} over {len(scores)} games ({result['seconds']} s) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
