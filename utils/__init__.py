"""The lowest layer: helpers every other package may use (user errors, flag parsing, device and
seeding, optimisers and schedules, statistics). It imports nothing else of the project."""
import warnings

# Paddle warns on every import when ccache is absent, and BatchNorm warns on every train-mode
# call; neither is actionable for a user, and they would bury the one-line error messages.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
