"""Backbone shapes: every registered backbone maps [N, 3, S, S] to the dense map its methods
expect ([N, out_channels, h, w]), at the image sizes the papers use and at small ones."""
import paddle
import pytest

from network import BACKBONES, build_backbone

#: (backbone, constructor options, image size, expected map side); reduced widths keep it fast
CASES = [
    ("Conv4", {"width": 8}, 84, 5),            # four 2x2 poolings: 84 -> 42 -> 21 -> 10 -> 5
    ("Conv4", {"width": 8}, 32, 2),
    ("ResNet12", {"widths": (4, 4, 8, 8)}, 84, 5),
    ("ResNet12", {"widths": (4, 4, 8, 8)}, 80, 5),
    ("ResNet10", {"widths": (4, 4, 8, 8)}, 224, 7),
    ("ResNet18", {"widths": (4, 4, 8, 8)}, 224, 7),
    ("ResNet25", {"widths": (4, 8, 16), "blocks": 1}, 80, 10),
    ("ResNet50", {}, 64, 2),
]


def test_every_backbone_has_a_case():
    assert {name for name, *_ in CASES} == set(BACKBONES)


@pytest.mark.parametrize("name,options,size,side", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_dense_map_shape(name, options, size, side):
    net = build_backbone(name, **options)
    net.eval()
    with paddle.no_grad():
        out = net(paddle.randn([2, 3, size, size]))
    assert out.shape == [2, net.out_channels, side, side]


@pytest.mark.parametrize("name,options,size,side", CASES[:3], ids=["Conv4-84", "Conv4-32", "ResNet12-84"])
def test_training_mode_keeps_the_shape_and_gradients_reach_the_input(name, options, size, side):
    net = build_backbone(name, **options)
    net.train()
    images = paddle.randn([3, 3, size, size])
    images.stop_gradient = False
    out = net(images)
    out.mean().backward()
    assert out.shape == [3, net.out_channels, side, side] and images.grad is not None


def test_unknown_backbone_is_refused():
    with pytest.raises(KeyError):
        build_backbone("VGG16")
