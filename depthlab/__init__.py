"""depthlab: hyperparameter studies of monocular depth-estimation methods."""

__version__ = "0.1.0"
