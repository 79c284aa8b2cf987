"""SimTrans's image pipelines (the reference's `utils/transforms`), at any image size."""
import paddle.vision.transforms as T

from data.transforms import MEAN, STD

TEST_RESIZE = 255 / 224          # Resize(255) before CenterCrop(224)


def simtrans_transform(image_size: int, training: bool) -> T.Compose:
    """The reference pipelines at `image_size` (224 in the paper): training RandomRotation(30),
    RandomResizedCrop(scale 0.5-1), flip; test Resize(255/224 * size) and CenterCrop."""
    head = ([T.RandomRotation(30), T.RandomResizedCrop(image_size, scale=(0.5, 1.0)), T.RandomHorizontalFlip()]
            if training else [T.Resize(round(image_size * TEST_RESIZE)), T.CenterCrop(image_size)])
    return T.Compose([*head, T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])
