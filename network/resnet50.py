"""ResNet-50 from `paddle.vision.models`, as a dense feature extractor.

The module tree is torchvision's (`conv1`, `bn1`, `layer1..4` of 3/4/6/3 bottlenecks with the stride
on the 3x3 conv, `downsample.0/1`), so torchvision checkpoints convert key for key (frn/convert.py).
Without the pool and the classifier the output is the map [N, 2048, H/32, W/32]; the methods pool it.
BatchNorm keeps Paddle's defaults, which are PyTorch's (momentum 0.1 as 0.9, epsilon 1e-5), in
the train-mode form with accurate sums (`PreciseBatchNorm2D`, network/batchnorm.py: float32
results at least as close to float64 as PyTorch's, where Paddle's stock kernel is ~2x further
per layer; 1.3-1.7x the training step time on CPU).
"""
import logging

import paddle
from paddle.vision.models.resnet import BottleneckBlock, ResNet, model_urls

from network.batchnorm import use_precise_batch_norm
from utils.errors import UserError


class ResNet50(ResNet):
    """Output [N, 2048, h, w] (7 x 7 for 224 x 224 images)."""

    def __init__(self):
        super().__init__(BottleneckBlock, 50, num_classes=0, with_pool=False)
        use_precise_batch_norm(self)
        self.out_channels = 2048


def imagenet_weights_file() -> str:
    """The file of Paddle's ImageNet weights of ResNet-50, downloaded once into ~/.cache/paddle.

    Offline this stops with one line instead of Paddle's retries and traceback."""
    from paddle.utils.download import get_weights_path_from_url
    url, md5 = model_urls["resnet50"]
    downloader = logging.getLogger("paddle.utils.download")
    level = downloader.level
    downloader.setLevel(logging.ERROR)  # its INFO lines would bury the one-line error
    try:
        path = get_weights_path_from_url(url, md5)
    except Exception as err:  # network errors surface as RuntimeError/OSError/...
        raise UserError(f"cannot download Paddle's ImageNet ResNet-50 weights ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120]}); run where Paddle can download them (e.g. AI Studio), "
                        f"pass a converted torchvision checkpoint to --imagenet_pretrained, "
                        f"or --imagenet_pretrained 0") from None
    finally:
        downloader.setLevel(level)
    return path


def imagenet_state() -> dict:
    """Paddle's ImageNet weights of ResNet-50 (`imagenet_weights_file`), without `fc`."""
    return {k: v for k, v in paddle.load(imagenet_weights_file()).items() if not k.startswith("fc.")}
