"""The lowest layer: helpers every other package may use (user errors, flag parsing, device and
seeding, optimisers and schedules, statistics). It imports nothing else of the project."""
import os
import sys
import warnings

#: the CPU thread variables as the process had them before Paddle's import, which sets
#: OMP_NUM_THREADS=1 when it is unset (read by utils/device.py `user_thread_setting`); None
#: when Paddle was imported before this package (then /proc/self/environ tells, on Linux)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
THREAD_ENV_BEFORE_PADDLE = (None if "paddle" in sys.modules
                            else {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ})

# Pillow's image codecs are loaded before Paddle can be: with Paddle 2.6 loaded first, Pillow's
# PNG encoder binds to the zlib inside Paddle's library and crashes (segmentation fault in
# deflateReset) the first time a PNG is written.
import PIL.Image  # noqa: F401  (imported for its side effect)

# Paddle warns on every import when ccache is absent, and BatchNorm warns on every train-mode
# call; neither is actionable for a user, and they would bury the one-line error messages.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
