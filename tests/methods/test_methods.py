"""Method contract, registry and the heads' maths on small random inputs."""

import numpy as np
import paddle
import pytest

from methods import METHODS, options_for
from methods.base import FewShotMethod, query_labels, split_episode
from methods.frn import aux_loss, reconstruct, reconstruction_distance
from network import build_backbone


def make(method: str, model: str = "Conv4", num_classes=None, image_size: int = 32):
    backbone = build_backbone(model, **({"widths": (8, 8, 8, 16)} if model == "ResNet12" else {"width": 8}))
    return METHODS[method](backbone, options_for(method, model=model, image_size=image_size), num_classes)


def test_registry_holds_the_seed_methods():
    assert {"protonet", "stl_frn", "meta_frn"} <= set(METHODS)
    assert all(issubclass(cls, FewShotMethod) for cls in METHODS.values())


def test_query_labels_are_positional():
    assert query_labels(3, 2).numpy().tolist() == [0, 0, 1, 1, 2, 2]


def test_protonet_logits_are_scaled_negative_squared_distances():
    model = make("protonet")
    support, query = paddle.randn([6, 10]), paddle.randn([4, 10])
    logits = model.episode_logits(support, query, way=3, shot=2).numpy()
    protos = support.numpy().reshape(3, 2, 10).mean(1)
    expected = -((query.numpy()[:, None] - protos[None]) ** 2).sum(-1) / 10
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [8, 24])  # fewer (kernel form) and more (d x d form) support rows than d = 16
def test_frn_ridge_form_equals_the_direct_kr_by_kr_solution(n):
    rng = np.random.RandomState(0)
    support = rng.rand(3, n, 16).astype("float64")   # way 3, n support vectors, d 16
    query = rng.rand(5, 16).astype("float64")
    alpha, beta = 0.3, -0.2
    args = (paddle.to_tensor(query), paddle.to_tensor(support), paddle.to_tensor(alpha, dtype="float64"),
            paddle.to_tensor(beta, dtype="float64"))
    lam = n / 16 * np.exp(alpha) + 1e-6
    recons = np.stack([np.exp(beta) * query @ s.T @ np.linalg.inv(s @ s.T + lam * np.eye(n)) @ s
                       for s in support])   # q S^T (S S^T + lam I)^-1 S, the paper's Eq. 8
    np.testing.assert_allclose(reconstruct(*args).numpy(), recons, rtol=1e-9)
    expected = ((recons - query[None]) ** 2).sum(2).T
    np.testing.assert_allclose(reconstruction_distance(*args).numpy(), expected, rtol=1e-9)


def test_aux_loss_counts_each_unordered_class_pair_once():
    s = paddle.to_tensor(np.random.RandomState(1).rand(4, 5, 6))
    n = s / paddle.linalg.norm(s.flatten())
    pairs = sum(float((paddle.matmul(n[i], n[j], transpose_y=True) ** 2).sum())
                for i in range(4) for j in range(i))
    np.testing.assert_allclose(float(aux_loss(s)), 0.03 * pairs, rtol=1e-10)


@pytest.mark.parametrize("model", ["Conv4", "ResNet12"])
def test_frn_pretraining_freezes_alpha_beta_and_trains_the_class_pools(model):
    net = make("stl_frn", model, num_classes=4)
    assert net.r.stop_gradient and not net.cat_mat.stop_gradient
    assert net.cat_mat.shape == [4, 4, net.feature_extractor.out_channels]  # 32px -> 2x2 map
    loss, logits = net(paddle.randn([3, 3, 32, 32]), paddle.to_tensor([0, 1, 3]))
    loss.backward()
    assert logits.shape == [3, 4] and net.r.grad is None and net.cat_mat.grad is not None


@pytest.mark.parametrize("method", ["meta_frn", "protonet"])
def test_episodic_forward_gives_loss_and_way_logits(method):
    net = make(method)
    images = paddle.randn([3 * 2 + 3 * 2, 3, 32, 32])
    loss, logits = net(images, query_labels(3, 2), episode=(3, 2))
    assert logits.shape == [6, 3] and float(loss) > 0
    support, query = split_episode(net.extract(images), 3, 2)
    assert net.episode_scores(support, query, 3, 2).shape == [6, 3]
