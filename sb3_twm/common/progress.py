"""
The progress bar of ``learn(progress_bar=True)`` for TWM: SB3's env-step bar (rich, as SB3's ``ProgressBarCallback``)
whose description says what runs (the random prefill, then training) and whose remaining time comes from the measured
cost of training, plus one bar per pretraining phase with its own remaining time.
"""

import time
from datetime import timedelta

from stable_baselines3.common.callbacks import BaseCallback

try:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text
except ImportError:  # pragma: no cover - rich comes with SB3's extra, as for SB3's own progress bar
    Progress = None


def format_seconds(seconds: float | None) -> str:
    """:return: ``h:mm:ss`` (days too when longer), or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    return str(timedelta(seconds=round(seconds)))


if Progress is not None:

    class _RemainingColumn(ProgressColumn):
        # A task's own estimate where it has one (field "remaining", seconds or None), else rich's from its speed.
        def __init__(self) -> None:
            super().__init__()
            self._rich = TimeRemainingColumn()

        def render(self, task: Task) -> Text:
            if "remaining" in task.fields:
                return Text(format_seconds(task.fields["remaining"]), style="progress.remaining")
            return self._rich.render(task)


class TWMProgressBarCallback(BaseCallback):
    """
    ``learn(progress_bar=True)`` for TWM. The env-step bar's remaining time is SB3's from the env speed during the
    prefill, then the measured seconds per env step since training started (pretraining excluded) times the steps
    left: the prefill runs thousands of times faster than training, so its speed says nothing about the run.
    """

    def __init__(self) -> None:
        super().__init__()
        if Progress is None:
            raise ImportError("The progress bar needs rich (and tqdm): pip install rich tqdm, or sb3-twm[extra].")
        self.progress: Progress | None = None
        self._task: TaskID | None = None
        self._training_started: tuple[float, int] | None = None

    def _on_training_start(self) -> None:
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            _RemainingColumn(),
        )
        self.progress.start()
        total = self.locals["total_timesteps"] - self.model.num_timesteps
        self._task = self.progress.add_task("prefill (random actions)", total=total)
        self._training_started = None

    def _on_step(self) -> bool:
        model = self.model
        description, fields = "prefill (random actions)", {}
        if model.num_timesteps > model.learning_starts and getattr(model, "_pretrained", True):
            now = time.perf_counter()
            if self._training_started is None:
                self._training_started = (now, model.num_timesteps)
            started, first_step = self._training_started
            steps = model.num_timesteps - first_step
            per_step = (now - started) / steps if steps > 0 else None
            left = self.progress.tasks[self._task].remaining - self.training_env.num_envs
            remaining = per_step * left if per_step is not None else None
            rate = f"{per_step:.3g} s/env step" if per_step is not None else "measuring"
            description, fields = f"training ({rate})", {"remaining": remaining}
        self.progress.update(self._task, advance=self.training_env.num_envs, description=description, **fields)
        return True

    def start_phase(self, description: str, total: int) -> TaskID:
        """
        :param description: What the phase trains.
        :param total: Its expected number of updates.
        :return: The phase's bar.
        """
        return self.progress.add_task(description, total=total)

    def advance(self, task: TaskID) -> None:
        """One update of the phase ``task`` done."""
        self.progress.update(task, advance=1)

    def finish_phase(self, task: TaskID) -> None:
        """The phase ``task`` is over: its bar is removed (the env-step bar stays)."""
        self.progress.remove_task(task)

    def _on_training_end(self) -> None:
        if self.progress is not None:
            self.progress.refresh()
            self.progress.stop()
