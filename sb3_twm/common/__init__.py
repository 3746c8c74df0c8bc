"""Building blocks shared by the world model and the algorithm."""
