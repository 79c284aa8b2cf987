"""The engine and workflows: command-line arguments, training and evaluation loops, checkpoints,
conversion of official checkpoints, logging, and the notebooks' helpers. It sits above
`methods/`, `data/` and `network/`; the entry scripts are its only users."""
import utils  # noqa: F401  (its warning filters apply before Paddle is imported)
