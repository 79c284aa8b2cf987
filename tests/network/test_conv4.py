"""Conv-4 blocks: the conv bias in front of a batch-statistics BatchNorm gets its exact gradient."""
import numpy as np
import paddle

from network.conv4 import Conv4


def _model(seed: int = 0) -> Conv4:
    paddle.seed(seed)
    return Conv4(width=8)


def test_train_mode_forward_is_the_plain_conv_bn_sequence():
    model = _model()
    model.train()
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype("float32"))
    block = model.layers[0]
    # same kernels on the same values: bit-identical, not merely close
    assert np.array_equal(block(x).numpy(), block.layers(x).numpy())


def test_conv_bias_gradient_is_exactly_zero_under_batch_statistics():
    """BN on batch statistics subtracts the channel mean, so the bias cancels: gradient 0 (not
    float32 noise), still a tensor so that weight decay applies to the bias as in the reference."""
    model = _model()
    model.train()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype("float32"))
    (model(x) ** 3).sum().backward()
    for i in (0, 3, 6, 9):
        conv = model.layers[i].layers[0]
        assert conv.bias.grad is not None and not np.any(conv.bias.grad.numpy())
        assert np.abs(conv.weight.grad.numpy()).max() > 0


def test_conv_bias_gradient_flows_with_running_statistics():
    """In eval mode BN uses its running statistics: the bias no longer cancels, and the block
    gives it the ordinary gradient of the plain conv -> BN sequence."""
    model = _model()
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype("float32"))
    block = model.layers[0]
    bias = block.layers[0].bias
    (ours,) = paddle.grad([(block(x) ** 2).sum()], [bias])
    (plain,) = paddle.grad([(block.layers(x) ** 2).sum()], [bias])
    assert np.abs(ours.numpy()).min() > 0
    np.testing.assert_array_equal(ours.numpy(), plain.numpy())
