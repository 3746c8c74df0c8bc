"""The error every unloadable checkpoint or dataset raises."""


class CheckpointError(ValueError):
    """A checkpoint or dataset file that cannot be loaded: truncated, corrupted, foreign or not matching the model."""
