"""
``python -m sb3_twm.dream``: what a trained TWM's world model dreams, on a fresh stretch of play.

The model plays ``--steps`` steps of a new episode with its actor; then the world model is given the first
``--context`` of them and goes on alone (its own latents, rewards and the actor's actions). The output shows every
step side by side: the real frame | its reconstruction | the world model's frame (green border: given real steps, red:
the open loop), with the predicted vs real rewards and discounts in a second picture next to it (``<out>_signals.png``).
For vector observations (``MlpPolicy``) the dream is a plot of the features over time (``.png``).

Examples::

    python -m sb3_twm.dream --model twm_pong.zip --env PongNoFrameskip-v4 --steps 64 --out dream.mp4
    python -m sb3_twm.dream --folder logs/ --algo twm --env PongNoFrameskip-v4 --out dream.gif   # as rl_zoo3.enjoy finds it
    python -m sb3_twm.dream --model twm_cartpole.zip --env CartPole-v1 --out dream.png
"""

import pathlib
import sys
from typing import Any

from sb3_twm.common.dream_pictures import VIDEO_SUFFIXES
from sb3_twm.zoo.runs import model_parser
from sb3_twm.zoo.runs import model_path as find_model

__all__ = ["main", "make_env"]


def make_env(env_id: str, seed: int) -> Any:
    """
    :param env_id: A Gymnasium id.
    :param seed: Seed of the env.
    :return: One env as TWM trains on it: the paper's Atari preprocessing for ALE games, SB3's ``make_vec_env`` else.
    """
    from sb3_twm.common.atari import is_atari_id, make_twm_atari_env

    if is_atari_id(env_id):
        return make_twm_atari_env(env_id, n_envs=1, seed=seed)
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(env_id, n_envs=1, seed=seed)


def main(argv: list[str] | None = None) -> int:
    """
    The command line (see the module docstring).

    :param argv: The arguments (default: ``sys.argv[1:]``).
    :return: The exit status.
    """
    parser = model_parser("python -m sb3_twm.dream", __doc__, "the env id the model was trained on")
    parser.add_argument("--steps", type=int, default=64, help="steps shown")
    parser.add_argument("--context", type=int, default=16, help="real steps given before the world model goes on alone")
    parser.add_argument("--out", "-o", type=pathlib.Path, default=pathlib.Path("dream.mp4"),
                        help=f"output: {', '.join(VIDEO_SUFFIXES)} (a sheet of 12 frames)")  # fmt: skip
    parser.add_argument("--fps", type=int, default=8, help="frames per second of a video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and of the dream")
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"--out {args.out}: unknown extension {args.out.suffix!r}; use {', '.join(VIDEO_SUFFIXES)}")
    if not 1 <= args.context <= args.steps:
        parser.error(f"--context must be between 1 and --steps ({args.steps}), got {args.context}")
    model_path, _ = find_model(args, parser)

    from stable_baselines3.common.utils import set_random_seed

    from sb3_twm import TWM
    from sb3_twm.common import dream_pictures
    from sb3_twm.common.checkpoints import CheckpointError
    from sb3_twm.twm.dreaming import dream_from_env

    set_random_seed(args.seed)
    env = make_env(args.env, args.seed)
    try:
        model = TWM.load(model_path, env=env, device=args.device)
    except CheckpointError as error:
        # Also an env that does not match the model; dreams need the model TWM.save writes (with its world model).
        parser.error(str(error))
    if not dream_pictures.is_image_dream_space(model.observation_space) and args.out.suffix.lower() != ".png":
        parser.error(f"{args.env} has vector observations: their dream is a plot of the features, write a .png")
    bar = None
    if not args.no_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps + 1, unit="step", desc="playing")
    try:
        result = dream_from_env(model, model.get_env(), args.steps, args.context, bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
        env.close()
    shape, signals = _write(result, args.out, args.fps)
    print(f"Dream of {model_path} ({model.num_timesteps} env steps): {shape} -> {args.out}; rewards, discounts -> {signals}")
    return 0


def _write(result: Any, out: pathlib.Path, fps: int) -> tuple[str, pathlib.Path]:
    # The dream's pictures: frames (or the feature plot) at ``out``, the reward/discount plot next to it.
    from PIL import Image

    from sb3_twm.common import dream_pictures

    signals = out.with_name(f"{out.stem}_signals.png")
    Image.fromarray(dream_pictures.signal_plot(result, sequences=1)).save(signals)
    if not dream_pictures.is_image_dream(result):
        Image.fromarray(dream_pictures.feature_plot(result)).save(out)
        return "a feature plot", signals
    frames = dream_pictures.side_by_side_frames(result)
    dream_pictures.write_frames(frames, out, fps=fps)
    return f"{len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}", signals


if __name__ == "__main__":
    sys.exit(main())
