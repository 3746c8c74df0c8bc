"""Dreams: what the world model makes of real sequences, logged during training and written by `python -m sb3_twm.dream`."""

import numpy as np
import pytest
import torch as th
from configurations import TINY_MLP_POLICY_KWARGS, TINY_POLICY_KWARGS, TINY_SCHEDULE_KWARGS
from PIL import Image as PILImage
from stable_baselines3.common.logger import Image, KVWriter, Logger, Video

from sb3_twm import TWM
from sb3_twm.common.atari import make_twm_atari_env
from sb3_twm.dream import main as dream_main

# 4 sequences per row block, panels of 64x64 with a 2-pixel border and 2-pixel gaps: real | reconstruction | model.
FRAME_HEIGHT, FRAME_WIDTH = 4 * (64 + 4 + 2) - 2, 3 * (64 + 4 + 2) - 2


class Pictures(KVWriter):
    """A logger output that keeps the pictures written to it."""

    def __init__(self) -> None:
        self.written: list[tuple[int, str, object]] = []

    def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
        self.written += [(step, key, value) for key, value in key_values.items() if isinstance(value, (Video, Image))]


def trained(policy: str, env, log_dream_interval: int, pictures: Pictures | None = None, steps: int = 300) -> TWM:
    policy_kwargs = TINY_POLICY_KWARGS if policy == "CnnPolicy" else TINY_MLP_POLICY_KWARGS
    model = TWM(policy, env, seed=0, policy_kwargs=policy_kwargs, log_dream_interval=log_dream_interval,
                **TINY_SCHEDULE_KWARGS)  # fmt: skip
    if pictures is not None:
        model.set_logger(Logger(None, [pictures]))
    model.learn(steps)
    return model


def state(model: TWM) -> dict[str, th.Tensor]:
    tensors = {}
    for name in ("policy", "world_model", "critic"):
        tensors.update({f"{name}.{key}": value for key, value in getattr(model, name).state_dict().items()})
    for index, optimizer in enumerate(model._optimizers()):
        for parameter, values in optimizer.state_dict()["state"].items():
            tensors.update({f"optimizer{index}.{parameter}.{key}": value for key, value in values.items()})
    tensors["visits"] = th.as_tensor(model.replay_buffer.visits)
    tensors["rng"] = th.get_rng_state()
    tensors["numpy"] = th.as_tensor(np.random.get_state()[1].astype(np.int64))
    return tensors


@pytest.fixture(scope="module")
def pong(tmp_path_factory):
    """A Pong run that dreams every 10 training steps and the same run without dreams (saved), once for the module."""
    pictures = Pictures()
    dreaming = trained("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), 10, pictures)
    plain = trained("CnnPolicy", make_twm_atari_env("PongNoFrameskip-v4", seed=0), 0)
    path = tmp_path_factory.mktemp("dream") / "pong.zip"
    plain.save(path)
    return pictures, dreaming, plain, path


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    pictures = Pictures()
    model = trained("MlpPolicy", "CartPole-v1", 10, pictures)
    path = tmp_path_factory.mktemp("dream") / "cartpole.zip"
    model.save(path)
    return pictures, path


@pytest.fixture(scope="module")
def pong_model(pong):
    return pong[3]


def test_dreams_are_logged_as_pictures_and_change_nothing_of_the_run(pong):
    pictures, dreaming, plain, _ = pong
    # 25 training steps: a dream at the 10th and the 20th, written at their env step.
    assert [(key, step) for step, key, _ in pictures.written] == [
        ("dream/frames", 240), ("dream/rewards_discounts", 240), ("dream/frames", 280), ("dream/rewards_discounts", 280)
    ]  # fmt: skip
    video, plot = pictures.written[0][2], pictures.written[1][2]
    assert video.frames.shape == (1, 32, 3, FRAME_HEIGHT, FRAME_WIDTH) and video.frames.dtype == th.uint8
    assert plot.dataformats == "HWC" and plot.image.dtype == np.uint8 and plot.image.shape[2] == 3
    # Parameters, optimiser states, visit counts and random generators as without dreams, bit for bit.
    dreaming_state, plain_state = state(dreaming), state(plain)
    assert dreaming_state.keys() == plain_state.keys()
    assert [key for key in plain_state if not th.equal(dreaming_state[key], plain_state[key])] == []


def test_a_dream_shows_real_steps_then_the_open_loop(pong):
    model = pong[2]
    result = model.dream(sequences=2, steps=12, context=5)
    assert result.real.shape == result.reconstructed.shape == result.imagined.shape == (2, 12, 4, 64, 64)
    assert result.predicted_rewards.shape == result.real_discounts.shape == result.actions.shape == (2, 12)
    # While given real steps, the world model's latents are the encoded real frames: its frames are the reconstructions.
    th.testing.assert_close(result.imagined[:, :5], result.reconstructed[:, :5])
    # Real frames are the dataset's newest ones, as features in [0, 1].
    newest = model.replay_buffer.observations[model.replay_buffer.pos - 12 : model.replay_buffer.pos, 0]
    np.testing.assert_allclose(result.real[0].numpy(), newest / 255.0, atol=1e-6)
    assert ((result.predicted_discounts >= 0) & (result.predicted_discounts <= 1)).all()
    with pytest.raises(ValueError, match="context must be in"):
        model.dream(steps=4, context=5)


def test_vector_dreams_are_feature_plots(cartpole):
    pictures, _ = cartpole
    keys = sorted({key for _, key, _ in pictures.written})
    assert keys == ["dream/features", "dream/rewards_discounts"]
    features = next(value for _, key, value in pictures.written if key == "dream/features")
    assert features.image.ndim == 3 and features.image.shape[2] == 3 and features.image.std() > 0


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".png"])
def test_the_command_writes_the_dream_of_a_saved_model(pong_model, tmp_path, suffix):
    out = tmp_path / f"dream{suffix}"
    arguments = ["--model", str(pong_model), "--env", "PongNoFrameskip-v4", "--steps", "12", "--context", "4"]
    assert dream_main([*arguments, "--out", str(out), "--no-progress-bar"]) == 0
    height, width = 64 + 4, 3 * (64 + 4 + 2) - 2  # one sequence: one row of panels
    if suffix == ".gif":
        with PILImage.open(out) as image:
            # Pillow merges identical consecutive frames, adding up their durations: 12 frames at 8 per second.
            durations = []
            for index in range(image.n_frames):
                image.seek(index)
                durations.append(image.info["duration"])
            # GIF durations are whole centiseconds: up to 10 ms off per frame.
            assert image.size == (width, height) and sum(durations) == pytest.approx(12 * 125, abs=12 * 10)
    elif suffix == ".png":
        with PILImage.open(out) as image:  # a sheet of the 12 frames, 4 per row, 6-pixel gaps
            assert image.size == (4 * width + 3 * 6, 3 * height + 2 * 6)
    else:
        from moviepy import VideoFileClip

        with VideoFileClip(str(out)) as clip:
            assert clip.size == [width, height + height % 2] and round(clip.duration * clip.fps) == 12
    with PILImage.open(tmp_path / "dream_signals.png") as signals:
        assert signals.size[0] > 200


def test_the_command_says_what_is_wrong(pong_model, tmp_path, capsys):
    def refused(*arguments: str) -> str:
        with pytest.raises(SystemExit):
            dream_main([*arguments, "--no-progress-bar"])
        return capsys.readouterr().err

    base = ["--model", str(pong_model)]
    assert "unknown extension '.avi'" in refused(*base, "--env", "PongNoFrameskip-v4", "--out", str(tmp_path / "d.avi"))
    # Breakout has 4 actions, the model Pong's 6.
    assert "action" in refused(*base, "--env", "BreakoutNoFrameskip-v4", "--out", str(tmp_path / "d.png"))
    policy_file = tmp_path / "policy.zip"
    TWM.load(pong_model).policy.save(policy_file)
    message = refused("--model", str(policy_file), "--env", "PongNoFrameskip-v4", "--out", str(tmp_path / "d.png"))
    assert "policy file" in message and "TWMPolicy.load" in message


def test_vector_dreams_from_the_command_are_plots(cartpole, tmp_path, capsys):
    path = str(cartpole[1])
    with pytest.raises(SystemExit):
        dream_main(["--model", path, "--env", "CartPole-v1", "--out", str(tmp_path / "d.mp4"), "--no-progress-bar"])
    assert "write a .png" in capsys.readouterr().err
    assert dream_main(["--model", path, "--env", "CartPole-v1", "--steps", "10", "--context", "3",
                       "--out", str(tmp_path / "cartpole.png"), "--no-progress-bar"]) == 0  # fmt: skip
    assert (tmp_path / "cartpole.png").stat().st_size > 1000
