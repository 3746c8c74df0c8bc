"""Training metrics kept on the device between log writes, so that training never waits for them."""

import torch as th
from stable_baselines3.common.logger import Logger


class Metrics:
    """
    Running sums of detached metric tensors by name (one tensor per name however long the logs are not written:
    SB3 writes them at episode ends, which can be rare); :meth:`write` records their means with SB3's logger.
    """

    def __init__(self) -> None:
        self._sums: dict[str, th.Tensor] = {}
        self._counts: dict[str, int] = {}

    def record(self, prefix: str, metrics: dict[str, th.Tensor]) -> None:
        """
        :param prefix: Name prefix, e.g. ``"world_model"``.
        :param metrics: Name -> scalar tensor (detached here).
        """
        for key, value in metrics.items():
            name = f"{prefix}/{key}"
            # float64 sums where the device has them: the mean of many float32 values stays exact to float32.
            value = value.detach().to(th.float32 if value.device.type == "mps" else th.float64)
            if name in self._sums:
                self._sums[name] += value
                self._counts[name] += 1
            else:
                self._sums[name], self._counts[name] = value.clone(), 1

    def means(self) -> dict[str, float]:
        """:return: The mean of every metric since the last write, by name (reads them from the device)."""
        return {name: float(total / self._counts[name]) for name, total in self._sums.items()}

    def write(self, logger: Logger) -> None:
        """
        Record the mean of every metric since the last write (``train/<name>``, pretraining metrics under their own
        ``pretrain_*`` names), then forget them.

        :param logger: SB3's logger.
        """
        for name, total in self._sums.items():
            logger.record(f"train/{name}" if not name.startswith("pretrain") else name, (total / self._counts[name]).item())
        self._sums, self._counts = {}, {}
