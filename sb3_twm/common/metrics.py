"""Training metrics kept on the device between log writes, so that training never waits for them."""

import torch as th
from stable_baselines3.common.logger import Logger


class Metrics:
    """Collects detached metric tensors by name; :meth:`write` records their means with SB3's logger."""

    def __init__(self) -> None:
        self._values: dict[str, list[th.Tensor]] = {}

    def record(self, prefix: str, metrics: dict[str, th.Tensor]) -> None:
        """
        :param prefix: Name prefix, e.g. ``"world_model"``.
        :param metrics: Name -> scalar tensor (detached here).
        """
        for key, value in metrics.items():
            self._values.setdefault(f"{prefix}/{key}", []).append(value.detach().float())

    def write(self, logger: Logger) -> None:
        """
        Record the mean of every metric since the last write (``train/<name>``, pretraining metrics under their own
        ``pretrain_*`` names), then forget them.

        :param logger: SB3's logger.
        """
        for key, values in self._values.items():
            logger.record(f"train/{key}" if not key.startswith("pretrain") else key, th.stack(values).mean().item())
        self._values = {}
