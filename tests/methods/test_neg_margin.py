"""Negative-Margin: heads, meta-test fitting (batched = one episode at a time), protocols, flags,
backbone options and key maps, on small random inputs (the reference numbers are in tests/parity)."""
import argparse

import numpy as np
import paddle
import pytest

from frn.args import parse, pretrain_parser, test_parser
from methods.neg_margin import (
    FitSettings,
    NegMargin,
    NegMarginOptions,
    draw_episode,
    fit_classifiers,
    head_logits,
    support_batches,
)
from network import build_backbone
from utils.errors import UserError


def flags(*extra: str, parser=test_parser) -> argparse.Namespace:
    return parse(parser(), ["--method", "neg_margin", "--model", "Conv4", "--image_size", "32", *extra])


def options(*extra: str) -> NegMarginOptions:
    return flags(*extra).options


def build(*extra: str, num_classes=None) -> NegMargin:
    opts = options(*extra)
    return NegMargin(build_backbone("Conv4", **NegMargin.backbone_options(opts)), opts, num_classes)


def episodes(n: int, way: int = 5, shot: int = 2, query: int = 3, dim: int = 24, seed: int = 0):
    """Random support/query features of n episodes whose classes are separable."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(n, way, 1, dim) * 2
    support = (centres + rng.randn(n, way, shot, dim)).reshape(n, way * shot, dim)
    queries = (centres + rng.randn(n, way, query, dim)).reshape(n, way * query, dim)
    return paddle.to_tensor(support.astype("float32")), paddle.to_tensor(queries.astype("float32"))


# ----- heads ----------------------------------------------------------------------------------
def test_negative_margin_raises_the_target_logit_only_with_labels():
    x, w = paddle.randn([4, 8]), paddle.randn([3, 8])
    labels = paddle.to_tensor([0, 1, 2, 0])
    plain = head_logits(x, w, "cosineface", 10.0, -0.1).numpy()
    margin = head_logits(x, w, "cosineface", 10.0, -0.1, labels).numpy()
    diff = margin - plain
    np.testing.assert_allclose(diff[np.arange(4), labels.numpy()], 1.0, rtol=1e-5)  # -m * s
    diff[np.arange(4), labels.numpy()] = 0
    np.testing.assert_allclose(diff, 0, atol=1e-6)


def test_neg_softmax_subtracts_the_row_minimum():
    x, w = paddle.randn([5, 6]), paddle.randn([4, 6])
    logits = head_logits(x, w, "neg-softmax", 2.0).numpy()
    z = x.numpy() @ w.numpy().T
    np.testing.assert_allclose(logits, 2.0 * (z - z.min(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    assert np.all(logits.min(1) == 0)


def test_training_head_may_be_wider_than_the_classes_present():
    model = build(num_classes=12)
    images, labels = paddle.randn([6, 3, 32, 32]), paddle.to_tensor([0, 1, 2, 3, 4, 5])
    loss, logits = model(images, labels)
    loss.backward()
    grad = model.classifier.weight.grad.numpy()
    assert logits.shape == [6, 12]
    assert np.abs(grad[6:]).sum() > 0  # absent classes sit in the softmax denominator


# ----- meta-test fitting ------------------------------------------------------------------------
def test_support_batches_walk_fresh_permutations():
    rng = np.random.RandomState(0)
    batches = support_batches(rng, 5, 4, 5)  # passes of [4, 1], stopped inside the third
    assert [len(b) for b in batches] == [4, 1, 4, 1, 4]
    assert sorted(np.concatenate(batches[:2])) == list(range(5))
    assert sorted(np.concatenate(batches[2:4])) == list(range(5))


@pytest.mark.parametrize("protocol,shot,steps", [("mmfs", 1, 150), ("mmfs", 5, 600), ("bl0", 1, 200),
                                                 ("bl0", 5, 700)])
def test_each_protocol_fits_for_its_step_count(protocol, shot, steps):
    assert build("--protocol", protocol).fit_steps(shot, 5 * shot) == steps


def test_step_count_flags_override_the_protocol():
    assert build("--finetune_steps", "7").fit_steps(5, 25) == 7
    assert build("--protocol", "mmfs", "--finetune_epochs", "3").fit_steps(5, 25) == 21


@pytest.mark.parametrize("metric", ["cosineface", "neg-softmax", "softmax"])
def test_batched_fitting_equals_one_episode_at_a_time(metric):
    model = build("--metric", metric, "--finetune_steps", "30")
    support, query = episodes(6)
    np.random.seed(3)
    batched = model.episode_scores_batch(support, query, 5, 2).numpy()
    np.random.seed(3)
    single = np.stack([model.episode_scores(support[e], query[e], 5, 2).numpy() for e in range(6)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batched.argmax(-1), single.argmax(-1))


def test_fitting_learns_separable_episodes():
    support, query = episodes(4)
    np.random.seed(0)
    scores = build().episode_scores_batch(support, query, 5, 2)
    labels = np.arange(5).repeat(3)
    assert (scores.numpy().argmax(-1) == labels).mean() > 0.8


def test_fitting_never_touches_the_backbone_or_the_support():
    support, _ = episodes(2)
    before = support.numpy().copy()
    fit = FitSettings()
    draws = [draw_episode(np.random.RandomState(e), 5, 24, 10, fit, 5) for e in range(2)]
    weight = paddle.to_tensor(np.stack([d[0] for d in draws]))
    batches = [np.stack([d[2][t] for d in draws]) for t in range(5)]
    with paddle.no_grad():  # as in evaluation
        fitted, _ = fit_classifiers(support, np.arange(5).repeat(2), weight, None, batches, fit)
    assert not np.allclose(fitted.numpy(), weight.numpy())
    np.testing.assert_array_equal(support.numpy(), before)


def test_adapt_fits_on_explicit_labels_in_any_order():
    """A shuffled support set of unequal classes with its labels gives the classifier of the
    class-major set fitted on the same features, batch for batch: the labels are honoured, not
    derived from positions."""
    model = build("--finetune_steps", "12")
    counts = [3, 1, 2]
    rng = np.random.RandomState(0)
    ordered = paddle.to_tensor(rng.randn(sum(counts), 24).astype("float32"))
    labels = np.repeat(np.arange(3), counts)
    perm = rng.permutation(len(labels))
    np.random.seed(5)
    adapted = model.adapt(ordered[paddle.to_tensor(perm)], paddle.to_tensor(labels[perm]), 3)
    np.random.seed(5)  # the same draws, mapped onto the class-major order
    weight, _, batches = draw_episode(np.random, 3, 24, len(labels), model.fit, 12)
    expected, _ = fit_classifiers(ordered.unsqueeze(0), labels, paddle.to_tensor(weight[None]), None,
                                  [perm[b][None] for b in batches], model.fit)
    np.testing.assert_array_equal(adapted["weight"].numpy(), expected[0].numpy())


def test_adapt_on_unequal_classes_learns_them():
    support, query = episodes(1, shot=4)
    keep = np.concatenate([np.arange(c * 4, c * 4 + n) for c, n in enumerate([4, 1, 3, 2, 4])])
    labels = paddle.to_tensor(np.arange(5).repeat(4)[keep])
    np.random.seed(0)
    model = build()
    scores = model.adapted_scores(model.adapt(support[0][paddle.to_tensor(keep)], labels, 5), query[0])
    assert (scores.numpy().argmax(-1) == np.arange(5).repeat(3)).mean() > 0.8


# ----- flags --------------------------------------------------------------------------------------
def test_reference_spellings_of_the_flags():
    opts = options("--metric_type", "softmax", "--temperature", "7")
    assert opts.metric == "neg-softmax" and opts.scale_factor == 7.0


def test_run_names_differ_by_margin_and_protocol():
    names = {options(*f).run_name() for f in (["--margin", "0"], ["--margin", "-0.01"],
                                                     ["--margin", "-0.01", "--protocol", "bl0"])}
    assert names == {"neg_margin_mmfs_cosineface_m0", "neg_margin_mmfs_cosineface_m-0.01",
                     "neg_margin_bl0_cosineface_m-0.01"}


@pytest.mark.parametrize("extra,needle", [
    (["--margin", "0.1"], "--margin 0.1 is positive"),
    (["--test_margin", "0.2"], "--test_margin 0.2 is positive"),
    (["--metric", "cosine", "--margin", "-0.1"], "has no effect with --metric cosine"),
    (["--finetune_steps", "5", "--finetune_epochs", "2"], "once"),
    (["--metric", "cosineface", "--metric_type", "cosine"], "once"),
    (["--episode_batch", "0"], "--episode_batch"),
    (["--drop_rate", "1.5"], "--drop_rate"),
])
def test_bad_flags_are_one_line_errors(extra, needle):
    with pytest.raises(UserError, match=needle):
        flags(*extra)


def test_bl0_allows_a_positive_margin():
    assert options("--protocol", "bl0", "--margin", "0.1").margin == 0.1


def test_default_scales_follow_the_protocol():
    assert options().training_scale() == 10.0
    assert options("--protocol", "bl0").training_scale() == 30.0
    assert options("--protocol", "bl0", "--metric", "neg-softmax").training_scale() == 5.0


# ----- backbones ------------------------------------------------------------------------------
def test_conv4_reference_init_is_kaiming_fan_out():
    paddle.seed(0)
    weights = build_backbone("Conv4", init="kaiming").layers[3].layers[0].weight.numpy()
    np.testing.assert_allclose(weights.std(), np.sqrt(2 / (9 * 64)), rtol=0.05)


def test_conv4_key_maps():
    from network.conv4 import Conv4
    assert Conv4.from_reference_key("trunk.2.C.weight") == "layers.6.layers.0.weight"
    assert Conv4.from_reference_key("trunk.2.BN.running_mean") == "layers.6.layers.1.running_mean"
    assert Conv4.from_reference_key("trunk.2.trunk.1.running_mean") is None  # bl0's alias of the same tensor
    assert Conv4.from_reference_key("layers.3.layers.1.bias", "mmfewshot") == "layers.9.layers.1.bias"
    assert Conv4.from_reference_key("layers.3.layers.1.bias") == "layers.3.layers.1.bias"  # FRN's: ours


def test_resnet_key_maps():
    from network.resnet12 import ResNet12
    from network.resnet18 import CloserLookResNet
    assert ResNet12.from_reference_key("layer2.0.BN3.weight") == "layer2.0.bn3.weight"
    assert ResNet12.from_reference_key("layer2.0.norm1.bias") == "layer2.0.bn1.bias"
    assert CloserLookResNet.from_reference_key("layer3.0.BNshortcut.running_var") == "layer3.0.shortcut.1.running_var"
    assert CloserLookResNet.from_reference_key("layer3.1.C2.weight") == "layer3.1.conv2.weight"


@pytest.mark.parametrize("name,blocks", [("ResNet10", 1), ("ResNet18", 2)])
def test_closer_look_resnets(name, blocks):
    net = build_backbone(name, widths=(8, 16, 24, 32))
    assert len(net.layer2) == blocks and net.layer1[0].shortcut is not None and net.layer2[0].shortcut is not None
    net.eval()
    assert net(paddle.randn([1, 3, 64, 64])).shape == [1, 32, 2, 2]


def test_dropblock_schedule_counts_training_passes_and_is_checkpointed():
    net = build_backbone("ResNet12", widths=(4, 4, 8, 8), drop_rate=0.1, dropblock_size=5)
    x = paddle.randn([2, 3, 32, 32])
    net.train()
    net(x)
    net(x)
    net.eval()
    net(x)
    assert net.dropblock_step.count.item() == 2 and net.layer3[0].step == 1
    assert "dropblock_step.count" in net.state_dict()
    assert "dropblock_step.count" not in build_backbone("ResNet12", widths=(4, 4, 8, 8)).state_dict()


def test_model_trained_with_dropblock_loads_into_a_test_model_without(tmp_path):
    from frn.checkpoint import load_weights, save_model
    make = lambda *extra: NegMargin(  # noqa: E731
        build_backbone("ResNet12", widths=(4, 4, 8, 8),
                       **NegMargin.backbone_options(options(*extra, "--model", "ResNet12"))),
        options(*extra, "--model", "ResNet12"), None)
    trained = make("--drop_rate", "0.1")
    save_model(trained, str(tmp_path / "m.pdparams"))
    load_weights(make(), str(tmp_path / "m.pdparams"))


def test_pretrain_parser_takes_the_schedule_flags():
    args = flags("--lr_schedule", "cosine", "--warmup_epochs", "2", "--warmup_start", "0.0625", "--lr_lag", "1",
                 parser=pretrain_parser)
    assert (args.lr_schedule, args.warmup_epochs, args.lr_lag) == ("cosine", 2, 1)
