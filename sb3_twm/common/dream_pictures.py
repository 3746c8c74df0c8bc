"""
Pictures of a dream (:class:`~sb3_twm.world_model.dreams.Dream`): side-by-side frames (real | reconstruction |
world model) for image observations, a plot of predicted vs real rewards and discounts, and for vector observations a
plot of the features over time; written as video (mp4, gif) or a png sheet of frames.
"""

import pathlib
from typing import Any

import numpy as np

__all__ = [
    "VIDEO_SUFFIXES",
    "feature_plot",
    "is_image_dream",
    "is_image_dream_space",
    "side_by_side_frames",
    "signal_plot",
    "write_frames",
]

VIDEO_SUFFIXES = (".mp4", ".gif", ".png")
_GAP = 2  # pixels between panels
_OPEN_LOOP = np.array([220, 40, 40], dtype=np.uint8)  # border of the frames the dynamics model made up alone
_CONTEXT = np.array([60, 160, 60], dtype=np.uint8)  # border of the frames it was given


def is_image_dream(dream: Any) -> bool:
    """:return: Whether the dream's observations are images (``(C, H, W)`` features)."""
    return dream.real.dim() == 5


def is_image_dream_space(observation_space: Any) -> bool:
    """:return: Whether dreams of a model with this observation space are frames (images ``(C, H, W)``)."""
    return len(observation_space.shape) == 3


def _to_rgb(features: np.ndarray) -> np.ndarray:
    # features: (..., C, H, W) in [0, 1]; the newest frame of a stack (the last channel, or the last 3 for RGB stacks)
    channels = features.shape[-3]
    picture = features[..., -3:, :, :] if channels % 3 == 0 else np.repeat(features[..., -1:, :, :], 3, axis=-3)
    picture = np.moveaxis(picture, -3, -1)  # (..., H, W, 3)
    return (np.clip(picture, 0.0, 1.0) * 255).round().astype(np.uint8)


def side_by_side_frames(dream: Any, sequences: int | None = None) -> np.ndarray:
    """
    :param dream: A dream of image observations.
    :param sequences: How many of its sequences to show (rows; default all).
    :return: ``(T, H', W', 3)`` uint8 frames: one row per sequence, columns real | reconstruction | world model; the
        world model's frames have a green border while it is given real steps and a red one in the open loop.
    """
    # real, reconstructed, imagined: (B, T, C, H, W)
    panels = [_to_rgb(part[:sequences].detach().cpu().numpy()) for part in (dream.real, dream.reconstructed, dream.imagined)]
    rows, steps, height, width, _ = panels[0].shape
    border = 2
    frames = np.full((steps, rows * (height + 2 * border + _GAP) - _GAP, 3 * (width + 2 * border + _GAP) - _GAP, 3),
                     255, dtype=np.uint8)  # fmt: skip
    for step in range(steps):
        color = _CONTEXT if step < dream.context else _OPEN_LOOP
        for row in range(rows):
            top = row * (height + 2 * border + _GAP)
            for column, panel in enumerate(panels):
                left = column * (width + 2 * border + _GAP)
                if column == 2:
                    frames[step, top : top + height + 2 * border, left : left + width + 2 * border] = color
                inner_top, inner_left = top + border, left + border
                frames[step, inner_top : inner_top + height, inner_left : inner_left + width] = panel[row, step]
    return frames


def _figure_to_array(figure: Any) -> np.ndarray:
    import matplotlib.pyplot as plt

    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # pictures only, no display
    import matplotlib.pyplot as plt

    return plt


def signal_plot(dream: Any, sequences: int = 2) -> np.ndarray:
    """
    :param dream: A dream.
    :param sequences: How many of its sequences to plot.
    :return: ``(H, W, 3)`` uint8 image: predicted vs real rewards and discounts per step, the open loop shaded.
    """
    plt = _pyplot()
    sequences = min(sequences, dream.real.shape[0])
    figure, axes = plt.subplots(2, sequences, figsize=(4.2 * sequences, 4.4), squeeze=False, sharex=True)
    steps = np.arange(1, dream.real.shape[1] + 1)
    signals = (("reward", dream.real_rewards, dream.predicted_rewards), ("discount", dream.real_discounts,
               dream.predicted_discounts))  # fmt: skip
    for column in range(sequences):
        for row, (name, real, predicted) in enumerate(signals):
            axis = axes[row, column]
            axis.axvspan(dream.context + 0.5, steps[-1] + 0.5, color="tab:red", alpha=0.08, label="open loop")
            axis.plot(steps, real[column].cpu().numpy(), "o-", color="black", markersize=3, label=f"real {name}")
            axis.plot(steps, predicted[column].cpu().numpy(), "s--", color="tab:blue", markersize=3,
                      label=f"predicted {name}")  # fmt: skip
            if row == 1:
                axis.set_xlabel("step")
                axis.set_ylim(-0.05, 1.05)
            if column == 0:
                axis.set_ylabel(name)
                axis.legend(fontsize=7, loc="best")
        axes[0, column].set_title(f"sequence {column + 1}")
    figure.tight_layout()
    return _figure_to_array(figure)


def feature_plot(dream: Any, features: int = 8) -> np.ndarray:
    """
    :param dream: A dream of vector observations.
    :param features: How many features to plot (the first ones).
    :return: ``(H, W, 3)`` uint8 image: real, reconstructed and world-model features of the first sequence over time.
    """
    plt = _pyplot()
    real, reconstructed, imagined = (part[0].reshape(part.shape[1], -1).cpu().numpy()
                                     for part in (dream.real, dream.reconstructed, dream.imagined))  # fmt: skip
    count = min(features, real.shape[1])
    columns = min(count, 4)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False, sharex=True)
    steps = np.arange(1, real.shape[0] + 1)
    for index in range(rows * columns):
        axis = axes[index // columns, index % columns]
        if index >= count:
            axis.axis("off")
            continue
        axis.axvspan(dream.context + 0.5, steps[-1] + 0.5, color="tab:red", alpha=0.08)
        axis.plot(steps, real[:, index], "o-", color="black", markersize=3, label="real")
        axis.plot(steps, reconstructed[:, index], "--", color="tab:green", label="reconstructed")
        axis.plot(steps, imagined[:, index], "s-", color="tab:blue", markersize=3, label="world model")
        axis.set_title(f"feature {index}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    figure.suptitle("Real vs reconstructed vs world model (shaded: open loop)", fontsize=10)
    figure.tight_layout()
    return _figure_to_array(figure)


def _grid(frames: np.ndarray, columns: int, gap: int = 6) -> np.ndarray:
    # frames: (N, H, W, 3) -> rows of ``columns`` frames, white gaps between them, in reading order
    count, height, width, _ = frames.shape
    rows, columns = -(-count // columns), min(columns, count)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for index, frame in enumerate(frames):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = frame
    return grid


def write_frames(frames: np.ndarray, path: pathlib.Path, fps: int = 8) -> pathlib.Path:
    """
    :param frames: ``(T, H, W, 3)`` uint8.
    :param path: ``.mp4`` (moviepy), ``.gif`` (Pillow), or ``.png``: a sheet of the frames (at most 12, evenly
        spaced, 4 per row).
    :param fps: Frames per second of a video.
    :return: The path written.
    """
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"Cannot write {path}: the output must end in {', '.join(VIDEO_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    if suffix == ".gif":
        # Pillow merges identical consecutive frames into one of the summed duration: the timing stays that of fps.
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
        return path
    if suffix == ".png":
        chosen = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), 12)).round().astype(int))
        Image.fromarray(_grid(frames[chosen], columns=4)).save(path)
        return path
    try:
        from moviepy import ImageSequenceClip
    except ImportError as error:
        message = "Writing .mp4 needs moviepy (pip install moviepy, or the 'zoo' extra); .gif and .png need none."
        raise ImportError(message) from error
    # H.264 needs even sizes: pad with a white row/column.
    height, width = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
    padded = np.full((len(frames), height, width, 3), 255, dtype=np.uint8)
    padded[:, : frames.shape[1], : frames.shape[2]] = frames
    clip = ImageSequenceClip(list(padded), fps=fps)
    clip.write_videofile(str(path), fps=fps, codec="libx264", audio=False, logger=None)
    return path
