"""
SB3's ``OffPolicyAlgorithm`` with what an exact resume from any checkpoint needs (TWM's base class):

- each step is checked, stored in the dataset and its episodes counted *before* the callbacks see it, so that a
  checkpoint saved by a callback (``CheckpointCallback``) holds the step its name counts;
- the training a step is owed when a callback saves mid-rollout (``_untrained_env_steps``, saved with the model) runs
  first thing when the loaded model resumes, with the random-generator states the checkpoint holds;
- a resumed run (``learn(reset_num_timesteps=False)`` with fresh envs) seeds its new episodes from the run's seed and
  step, and marks an episode boundary in the dataset.

The collection loop is SB3's ``OffPolicyAlgorithm.collect_rollouts`` (stable-baselines3 2.9), overridden in the open
as sb3-contrib's ``RecurrentPPO`` does, without action noise and gSDE (its subclasses use neither).
"""

import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback, RolloutReturn, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps
from stable_baselines3.common.vec_env import VecEnv

from sb3_twm.common.buffers import TWMReplayBuffer
from sb3_twm.common.checkpoints import resume_seed
from sb3_twm.common.checks import check_env_step


class ResumableOffPolicyAlgorithm(OffPolicyAlgorithm):
    """An ``OffPolicyAlgorithm`` whose checkpoints, saved at any step, resume exactly (see the module)."""

    replay_buffer: TWMReplayBuffer
    # Env steps collected in the current rollout whose training call has not happened yet: nonzero only while a
    # rollout runs, so a checkpoint saved by a callback knows the training a resumed run owes.
    _untrained_env_steps: int = 0

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        env_will_reset = reset_num_timesteps or self._last_obs is None
        resuming = not reset_num_timesteps and self.num_timesteps > 0
        if resuming and env_will_reset and self.seed is not None and self.env is not None:
            # New episodes in a continued run: seed them from the run's seed and step, so that a run resumed from a
            # checkpoint and one that replaces its envs at the same step collect the same experience.
            self.env.seed(resume_seed(self.seed, self.num_timesteps))
        owed_steps, owed_total = (self._untrained_env_steps if resuming else 0), self._total_timesteps
        self._untrained_env_steps = 0
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if owed_steps > 0:
            self._train_owed_steps(owed_steps, owed_total)
        if env_will_reset and self.replay_buffer is not None and self.replay_buffer.size() > 0:
            # The stored experience and the fresh episodes are not one trajectory.
            self.replay_buffer.mark_episode_boundary()
        if result[0] <= self.learning_starts:
            warnings.warn(
                f"learn() ends at step {result[0]}, not past learning_starts={self.learning_starts}: this call only "
                "collects random-action steps and does not train.",
                stacklevel=5,
            )
        return result

    def _train_owed_steps(self, env_steps: int, total_timesteps: int) -> None:
        """
        Make the training call that a checkpoint saved during a rollout (by a callback) came before: the run that
        saved it made this call right after that rollout, with the RNG states the checkpoint holds.

        :param env_steps: Env steps of that rollout.
        :param total_timesteps: The total of the ``learn()`` call that was running (for the progress).
        """
        if self.num_timesteps > 0 and self.num_timesteps > self.learning_starts:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            gradient_steps = self.gradient_steps if self.gradient_steps >= 0 else env_steps
            if gradient_steps > 0:
                self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: TWMReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """SB3's collection loop, each step stored (and its episodes counted) before the callbacks see it."""
        self.policy.set_training_mode(False)
        num_collected_steps, num_collected_episodes = 0, 0
        assert isinstance(env, VecEnv), "You must pass a VecEnv"
        assert train_freq.frequency > 0, "Should at least collect one step or episode."
        if env.num_envs > 1:
            assert train_freq.unit == TrainFrequencyUnit.STEP, "You must use only one env when doing episodic training."
        callback.on_rollout_start()
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions, buffer_actions = self._sample_action(learning_starts, action_noise, env.num_envs)
            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs
            num_collected_steps += 1
            logs_due = self._store_step(replay_buffer, buffer_actions, new_obs, rewards, dones, infos, log_interval)
            num_collected_episodes += int(np.sum(dones))
            self._untrained_env_steps = num_collected_steps * env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=False)
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for _ in range(logs_due):
                self.dump_logs()
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=True)

    def _store_step(
        self,
        replay_buffer: TWMReplayBuffer,
        buffer_actions: np.ndarray,
        new_obs: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        log_interval: int | None,
    ) -> int:
        """
        Check and store a step, count the episodes it ended.

        :return: How many times the logs are due (every ``log_interval`` episodes, as in SB3's loop).
        """
        # Refused before it is stored: one NaN reward in the dataset would poison every batch that draws it.
        check_env_step(self.num_timesteps, rewards, new_obs)
        self._update_info_buffer(infos, dones)
        self._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)
        logs_due = 0
        for _ in range(int(np.sum(dones))):
            self._episode_num += 1
            logs_due += log_interval is not None and self._episode_num % log_interval == 0
        return logs_due
