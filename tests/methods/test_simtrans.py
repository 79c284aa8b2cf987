"""SimTrans pieces without the fixtures: pairs, sample weights, batches, the adversarial step,
the optimiser habits, the key maps of the reference checkpoints, the ResNet-50 converter."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from data.weakshot_batches import pair_training_batches, rand_pair_batches
from frn.engine import validation_fell
from methods import options_for
from methods.simtrans import GraphRegularisedClassifier, SimNet, WebClassifier
from methods.simtrans_parts import (
    DomainClassifier,
    adversarial_objective,
    layer_norm,
    pair_enumeration,
    pair_targets,
    raw_weights,
    sample_weights,
    similarity_matrix,
)
from tests.parity.simtrans_checks import stand_in_backbone
from utils.errors import UserError
from utils.optim import build_optimizer, reset_optimizer_state
from utils.stats import roc_auc


def test_pairs_put_the_fast_varying_image_first():
    x = paddle.to_tensor([[1.0], [2.0], [3.0]])
    pairs = pair_enumeration(x).numpy()
    assert pairs[:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1, 2, 3]
    assert pairs[:, 1].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    targets = pair_targets(paddle.to_tensor([0, 1, 0])).numpy().reshape(3, 3)
    np.testing.assert_array_equal(targets, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])


def test_similarity_matrix_rows_are_the_first_image():
    """S[i, j] = sim(concat(f_i, f_j)): the transpose of the reshaped pair scores."""
    paddle.seed(0)
    simnet = SimNet(stand_in_backbone(4, 6), options_for("simtrans_simnet", model="x", head_type="4"))
    simnet.eval()
    features = paddle.randn([5, 6])
    matrix = similarity_matrix(simnet.similarity_head, features, rows_per_call=2).numpy()
    with paddle.no_grad():
        logits, _ = simnet.similarity_head(pair_enumeration(features))
    reshaped = F.softmax(logits, axis=1)[:, 1].numpy().reshape(5, 5)
    np.testing.assert_allclose(matrix, reshaped.T, rtol=1e-5, atol=1e-6)


def test_weights_of_a_hand_made_matrix():
    s = np.array([[1.0, 0.8, 0.1], [0.6, 1.0, 0.2], [0.0, 0.4, 1.0]])
    np.testing.assert_allclose(raw_weights(s, "avg1"), s.mean(1))
    np.testing.assert_allclose(raw_weights(s, "avg0.7"), [0.9, 0.8, 0.7])  # top-2 of each row
    np.testing.assert_allclose(raw_weights(s, "savg1"), (s.mean(1) + s.mean(0)) / 2)
    distance = 1 - s
    cut = np.sort(distance.ravel())[int(9 * 0.5)]
    np.testing.assert_allclose(raw_weights(s, "den0.5"), (distance < cut).sum(1) - 1)
    weights = sample_weights(s, "avg1")
    assert weights.mean() == pytest.approx(1.0)
    relaxed = sample_weights(s, "avg1", "max_2_-4")
    assert relaxed.max() == pytest.approx(2.0)


@pytest.mark.parametrize("weight_type,norm", [("avg0.1", "one_mean"), ("xyz", "one_mean"), ("den1.5", "one_mean"),
                                              ("avg1", "max_two")])
def test_bad_weight_settings_are_one_line_errors(weight_type, norm):
    with pytest.raises(UserError):
        sample_weights(np.eye(3), weight_type, norm)


def test_rand_pair_batches_use_each_image_once_from_few_classes():
    labels = np.repeat(np.arange(6), 7)
    batches = rand_pair_batches(labels, 8, 2, np.random.RandomState(0))
    used = [i for batch in batches for i in batch]
    assert len(used) == len(set(used)) and len(batches) == len(labels) // 8
    assert all(len({labels[i] for i in batch}) <= 2 for batch in batches)
    one = pair_training_batches(labels, labels[:20], 100, 4, 3, 1, seed=1, epoch=2)
    assert one == pair_training_batches(labels, labels[:20], 100, 4, 3, 1, seed=1, epoch=2)
    assert one != pair_training_batches(labels, labels[:20], 100, 4, 3, 1, seed=1, epoch=3)
    assert all(len(b) == 8 and all(i < 100 for i in b[:4]) and all(i >= 100 for i in b[4:]) for b in one)


def simnet(beta: float, lr: float = 0.1, domain_lr: float = 0.1) -> SimNet:
    paddle.seed(1)
    options = options_for("simtrans_simnet", model="x", head_type="4", beta=beta, domain_lr=domain_lr)
    return SimNet(stand_in_backbone(5, 8), options)


def test_one_backward_makes_the_two_reference_updates():
    """SimNet: grad of L_sim - beta L_dom; discriminator: grad of its own loss on detached features."""
    model = simnet(beta=0.3)
    model.train()
    images = paddle.randn([8, 5])
    labels = paddle.to_tensor([0, 0, 1, 1, 0, 1, 1, 0])
    terms = model.training_terms(images, labels)
    adversarial_objective(terms).backward()
    params = {n: p for n, p in model.named_parameters() if not p.stop_gradient}  # (BN buffers are parameters)
    got = {name: p.grad.numpy().copy() for name, p in params.items()}
    model.clear_gradients()
    terms = model.training_terms(images, labels)  # in train mode BN uses batch statistics: same values
    diff, targets = terms["diff"], terms["domain_targets"]
    simnet_names = [n for n in params if not n.startswith("domain_classifier")]
    disc_names = [n for n in params if n.startswith("domain_classifier")]
    separate = [(simnet_names, terms["cls_loss"] - 0.3 * F.cross_entropy(model.domain_classifier(diff), targets)),
                (disc_names, F.cross_entropy(model.domain_classifier(diff.detach()), targets))]
    for names, loss in separate:
        for name, grad in zip(names, paddle.grad(loss, [params[n] for n in names], retain_graph=True)):
            np.testing.assert_allclose(got[name], grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


def test_the_discriminator_steps_with_its_own_learning_rate():
    model = simnet(beta=0.0, lr=0.1, domain_lr=0.02)
    scheduler = paddle.optimizer.lr.StepDecay(0.1, step_size=5, gamma=0.5)
    groups = model.parameter_groups(0.1)
    optimizer = build_optimizer(model, scheduler, "sgd", weight_decay=0.0, nesterov=False, groups=groups)
    params = {n: p for n, p in model.named_parameters() if not p.stop_gradient}
    before = {n: p.numpy().copy() for n, p in params.items()}
    model.train()
    loss, _, _ = model(paddle.randn([8, 5]), paddle.to_tensor([0, 1, 0, 1, 0, 1, 0, 1]))
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in params.items()}
    optimizer.step()
    for name, p in params.items():
        lr = 0.02 if name.startswith("domain_classifier") else 0.1
        np.testing.assert_allclose(before[name] - p.numpy(), lr * grads[name], rtol=1e-4, atol=1e-6)  # float32 p - p'


def test_layer_norm_gradient_keeps_the_scale():
    """Paddle 3.3.1's CPU layer_norm drops the scale from d/dx; the formula must not."""
    rng = np.random.RandomState(0)
    x = rng.randn(4, 6)
    weight, bias, up = 1 + 0.5 * rng.randn(6), rng.randn(6), rng.randn(4, 6)

    def value(a):
        c = a - a.mean(1, keepdims=True)
        return ((c / np.sqrt((c ** 2).mean(1, keepdims=True) + 1e-5) * weight + bias) * up).sum()
    xt = paddle.to_tensor(x, stop_gradient=False)
    out = layer_norm(xt, paddle.to_tensor(weight), paddle.to_tensor(bias), 1e-5)
    grad = paddle.grad((out * paddle.to_tensor(up)).sum(), xt)[0].numpy()
    eps, numeric = 1e-6, np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        numeric[index] = (value(x + step) - value(x - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    frozen = DomainClassifier(6)
    xs = paddle.randn([3, 6])
    xs.stop_gradient = False
    F.cross_entropy(frozen(xs, frozen=True), paddle.to_tensor([0, 1, 1])).backward()
    assert all(p.grad is None for p in frozen.parameters()) and xs.grad is not None


def test_fresh_optimizer_state_each_epoch():
    layer = paddle.nn.Linear(3, 2)
    momentum = paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=layer.parameters())
    adam = paddle.optimizer.Adam(0.1, parameters=layer.parameters())
    for optimizer in (momentum, adam):
        layer(paddle.ones([1, 3])).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        reset_optimizer_state(optimizer)
        for name, value in optimizer.state_dict().items():
            if isinstance(value, paddle.Tensor):
                expected = 0.9 if "beta1_pow" in name else 0.999 if "beta2_pow" in name else 0.0
                np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6)


def test_early_stop_after_strictly_falling_scores():
    history = [{"val_acc": v} for v in (50, 60, 59, 58, 57)]
    assert validation_fell(history, 4) and not validation_fell(history, 5)
    assert not validation_fell(history + [{"val_acc": 57}], 4) and not validation_fell(history, 0)


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5


def test_reference_key_names_map_onto_the_paddle_modules():
    assert SimNet.checkpoint_rules.from_reference_key("backbone.module.resnet.layer1.0.conv1.weight", None) == \
        "feature_extractor.layer1.0.conv1.weight"
    assert (SimNet.checkpoint_rules.from_reference_key("similarity_head.module.fc1.0.weight", None)
            == "similarity_head.fc1.0.weight")
    assert (WebClassifier.checkpoint_rules.from_reference_key("module.backbone.fc.weight", None)
            == "fc.weight")  # the GCN wrapper
    assert WebClassifier.checkpoint_rules.from_reference_key("conv1.weight", None) == "feature_extractor.conv1.weight"
    assert (WebClassifier.checkpoint_rules.from_reference_key("backbone.layer4.2.bn3._mean", None)
            == "feature_extractor.layer4.2.bn3._mean")


def test_graph_epochs_alternate_with_cross_entropy_epochs():
    options = options_for("simtrans_alternate", model="x", c0g1=1, cls=8, gcn=128)
    model = GraphRegularisedClassifier(stand_in_backbone(3, 4), options, 2)
    flags = []
    for epoch in range(4):
        model.start_epoch(epoch)
        flags.append((model.graph_epoch, options.batch_size(epoch, 64)))
    assert flags == [(True, 128), (False, 8), (True, 128), (False, 8)]


def test_imagenet_weights_offline_is_one_line(monkeypatch):
    import paddle.utils.download as download

    from frn.weakshot import load_backbone_weights
    from network import build_backbone

    def offline(*_args, **_kwargs):
        raise RuntimeError("Download from https://example failed. Retry limit reached")
    monkeypatch.setattr(download, "get_weights_path_from_url", offline)
    model = WebClassifier(build_backbone("ResNet50"), options_for("simtrans_naive", model="ResNet50"), 3)
    with pytest.raises(UserError, match="--imagenet_pretrained 0"):
        load_backbone_weights(model, "1", "--imagenet_pretrained")
    small = WebClassifier(stand_in_backbone(3, 4), options_for("simtrans_naive", model="Conv4"), 2)
    with pytest.raises(UserError, match="ResNet50 only"):
        load_backbone_weights(small, "1", "--imagenet_pretrained")
