"""Meta-Transfer Learning: stages, inner loop, episode layout, optimiser groups, flags, HT."""
import argparse

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from frn.args import meta_train_parser, parse, pretrain_parser, test_parser
from frn.hard_tasks import HardTaskEpisodes, worst_class
from frn.runs import build_model, build_training
from methods.mtl import MTL, adapt, linear_logits
from utils.errors import UserError

WIDTHS = "4,8,16"


def mtl_args(stage: str = "meta_train", **flags) -> argparse.Namespace:
    parser = {"pretrain": pretrain_parser, "meta_train": meta_train_parser, "test": test_parser}[stage]()
    argv = ["--method", "mtl", "--widths", WIDTHS, "--image_size", "16"]
    for name, value in flags.items():
        argv += [f"--{name}", str(value)]
    return parse(parser, argv)


def make(stage: str = "meta_train", num_classes=None, **flags) -> MTL:
    paddle.seed(0)
    return build_model(mtl_args(stage, **flags).options, num_classes)


# ----- stages ------------------------------------------------------------------------------------
def test_pretraining_stage_has_plain_convs_a_classifier_and_a_frozen_base_learner():
    net = make("pretrain", num_classes=7)
    names = {n for n, _ in net.named_parameters()}
    assert not any("mtl_" in n for n in names)
    assert not net.feature_extractor.conv1.weight.stop_gradient
    assert all(p.stop_gradient for p in net.base_learner.parameters())
    loss, logits = net(paddle.randn([3, 3, 16, 16]), paddle.to_tensor([0, 4, 6]))
    assert logits.shape == [3, 7] and float(loss) > 0
    assert net.inner_loop_settings() == (0.01, 100)   # preval_forward ignores --base_lr/--update_step


def test_meta_stage_trains_only_scaling_shifting_batchnorm_and_the_base_learner():
    net = make(base_lr=0.05, update_step=7)
    trainable = {n for n, p in net.named_parameters() if not p.stop_gradient}
    batch_norm = {f"{layer}.{leaf}" for layer, sub in net.named_sublayers() if isinstance(sub, paddle.nn.BatchNorm2D)
                  for leaf in ("weight", "bias")}
    scaling_shifting = {n for n, _ in net.named_parameters() if n.endswith(("mtl_weight", "mtl_bias"))}
    assert trainable == batch_norm | scaling_shifting | {"base_learner.fc1_w", "base_learner.fc1_b"}
    assert net.feature_extractor.conv1.weight.stop_gradient and net.feature_extractor.conv1.bias.stop_gradient
    assert net.inner_loop_settings() == (0.05, 7)
    assert not hasattr(net, "pre_fc")


def test_two_adam_groups_with_their_own_learning_rates_and_step_decay():
    net = make(lr=2e-4, meta_lr2=3e-3, step_size=10, gamma=0.5)
    args = mtl_args(lr=2e-4, meta_lr2=3e-3, step_size=10, gamma=0.5)
    optimizer, scheduler = build_training(args, net)
    assert isinstance(optimizer, paddle.optimizer.Adam) and optimizer.regularization is None
    factors = {n: p.optimize_attr["learning_rate"] for n, p in net.named_parameters() if not p.stop_gradient}
    assert all(f == pytest.approx(15.0) for n, f in factors.items() if n.startswith("base_learner."))
    assert all(f == 1.0 for n, f in factors.items() if not n.startswith("base_learner."))
    lrs = []
    for _ in range(25):
        lrs.append(scheduler.get_lr())
        scheduler.step()
    # epoch e (0-based) runs at lr * 0.5 ** (e // 10): PyTorch 0.4's StepLR stepped before each epoch
    assert lrs == pytest.approx([2e-4 * 0.5 ** (e // 10) for e in range(25)])


def test_training_passes_queries_then_support_through_the_encoder_separately():
    net = make()
    net.train()
    batch_sizes = []
    hook = net.feature_extractor.bn1.register_forward_pre_hook(lambda layer, x: batch_sizes.append(x[0].shape[0]))
    way, shot, query = 5, 2, 3
    loss, logits = net(paddle.randn([way * (shot + query), 3, 16, 16]),
                       paddle.arange(way).repeat_interleave(query), episode=(way, shot))
    hook.remove()
    assert batch_sizes == [way * query, way * shot]
    assert logits.shape == [way * query, way]
    loss.backward()
    assert net.base_learner.fc1_w.grad is not None and net.feature_extractor.conv1.mtl_weight.grad is not None


# ----- inner loop ----------------------------------------------------------------------------------
def _episode(way=5, shot=3, query=4, dim=6, seed=0, separation=2.0):
    rng = np.random.RandomState(seed)
    support = rng.randn(way * shot, dim) + np.repeat(np.eye(way, dim), shot, 0) * separation
    queries = rng.randn(way * query, dim) + np.repeat(np.eye(way, dim), query, 0) * separation
    weight = rng.randn(way, dim) * 0.3
    return support.astype("float32"), queries.astype("float32"), weight.astype("float32")


def test_inner_loop_is_first_order_plain_gradient_descent():
    support, queries, weight = _episode()
    labels = np.repeat(np.arange(5), 3)
    w0 = paddle.to_tensor(weight, stop_gradient=False)
    b0 = paddle.zeros([5])
    b0.stop_gradient = False
    s, q = paddle.to_tensor(support, stop_gradient=False), paddle.to_tensor(queries, stop_gradient=False)
    fast_w, fast_b = adapt(w0, b0, s, paddle.to_tensor(labels), lr=0.1, steps=3)
    # numpy: three steps of softmax-regression gradient descent
    w, b = weight.astype(np.float64), np.zeros(5)
    onehot = np.eye(5)[labels]
    for _ in range(3):
        z = support @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w, b = w - 0.1 * (p - onehot).T @ support / len(labels), b - 0.1 * (p - onehot).mean(0)
    np.testing.assert_allclose(fast_w.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast_b.numpy(), b, rtol=1e-5, atol=1e-6)
    loss = F.cross_entropy(linear_logits(q, fast_w, fast_b), paddle.arange(5).repeat_interleave(4))
    loss.backward()
    # identity path: the meta-gradient w.r.t. the initialisation is the gradient at the adapted weights
    fw = paddle.to_tensor(fast_w.numpy(), stop_gradient=False)
    (g,) = paddle.grad(F.cross_entropy(linear_logits(q.detach(), fw, fast_b.detach()),
                                       paddle.arange(5).repeat_interleave(4)), [fw])
    np.testing.assert_allclose(w0.grad.numpy(), g.numpy(), rtol=1e-6)
    assert s.grad is None, "no gradient may reach the support embeddings"
    assert q.grad is not None


def test_class_major_and_class_fastest_episodes_give_the_same_predictions():
    """The reference orders episodes class-fastest (label i % way), this project class-major
    (label i // shot): the same episode in either order adapts to the same weights."""
    support, queries, weight = _episode()
    major = adapt(paddle.to_tensor(weight), paddle.zeros([5]), paddle.to_tensor(support),
                  paddle.arange(5).repeat_interleave(3), lr=0.05, steps=20)
    fastest_order = np.arange(15).reshape(5, 3).T.reshape(-1)          # shot-major positions
    fastest = adapt(paddle.to_tensor(weight), paddle.zeros([5]), paddle.to_tensor(support[fastest_order]),
                    paddle.arange(5).tile([3]), lr=0.05, steps=20)
    for a, b in zip(major, fastest):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_evaluation_adapts_under_no_grad_and_beats_the_initialisation():
    support, queries, _ = _episode(dim=16, separation=4.0)
    net = make()
    net.base_learner = type(net.base_learner)(5, 16)
    net.options.base_lr, net.options.update_step = 0.5, 50
    net.eval()
    with paddle.no_grad():
        before = linear_logits(paddle.to_tensor(queries), net.base_learner.fc1_w, net.base_learner.fc1_b)
        after = net.episode_logits(paddle.to_tensor(support), paddle.to_tensor(queries), 5, 3)
    labels = np.repeat(np.arange(5), 4)
    assert (after.numpy().argmax(1) == labels).mean() > (before.numpy().argmax(1) == labels).mean()
    assert (after.numpy().argmax(1) == labels).mean() >= 0.9


def test_episodes_of_another_way_are_refused():
    net = make()
    with pytest.raises(UserError, match="5 classes"):
        net.episode_logits(paddle.randn([3, 16]), paddle.randn([3, 16]), 3, 1)


# ----- flags ---------------------------------------------------------------------------------------
def test_official_defaults_and_flag_names_per_entry_point():
    pre = parse(pretrain_parser(), ["--method", "mtl", "--pre_max_epoch", "110", "--pre_lr", "0.2",
                                    "--pre_gamma", "0.3", "--pre_step_size", "20", "--pre_batch_size", "64",
                                    "--pre_custom_momentum", "0.8",
                                    "--pre_custom_weight_decay", "1e-4", "--shot", "5", "--dataset_dir", "/d"])
    assert (pre.epoch, pre.lr, pre.gamma, pre.step_size, pre.batch_size, pre.momentum, pre.wd, pre.n_shot,
            pre.data_path) == (110, 0.2, 0.3, 20, 64, 0.8, 1e-4, 5, "/d")
    assert (pre.model, pre.image_size, pre.optimizer) == ("ResNet25", 80, "sgd")
    meta = parse(meta_train_parser(), ["--method", "mtl", "--max_epoch", "3", "--num_batch", "7", "--shot", "5",
                                       "--way", "4", "--train_query", "6", "--meta_lr1", "2e-4", "--meta_lr2", "5e-3",
                                       "--base_lr", "0.02", "--update_step", "100", "--init_weights", "p.pdparams",
                                       "--model_type", "ResNet", "--meta_label", "exp1"])
    assert (meta.epoch, meta.train_n_episode, meta.n_shot, meta.train_n_way, meta.val_n_way, meta.n_query, meta.lr,
            meta.meta_lr2, meta.base_lr, meta.update_step, meta.pretrain_path) == \
        (3, 7, 5, 4, 4, 6, 2e-4, 5e-3, 0.02, 100, "p.pdparams")
    assert (meta.optimizer, meta.wd, meta.step_size, meta.gamma) == ("adam", 0.0, 10, 0.5)
    test = parse(test_parser(), ["--method", "mtl", "--eval_weights", "m.pdparams", "--way", "5", "--shot", "1"])
    assert (test.model_path, test.test_n_way, test.update_step) == ("m.pdparams", 5, 50)


@pytest.mark.parametrize("argv, needle", [
    (["--model", "ResNet12"], "--model ResNet25"),
    (["--widths", "16,32"], "--widths"),
    (["--update_step", "0"], "--update_step"),
    (["--train_n_way", "5", "--val_n_way", "4"], "--val_n_way 4"),
])
def test_bad_flag_values_are_one_line_errors(argv, needle):
    with pytest.raises(UserError, match=needle.replace("+", r"\+")):
        parse(meta_train_parser(), ["--method", "mtl", *argv])


def test_official_flags_of_another_phase_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse(pretrain_parser(), ["--method", "mtl", "--meta_lr1", "1e-4"])
    assert "--meta_lr1" in capsys.readouterr().err


def test_image_pipeline_is_augmented_only_in_pretraining():
    from PIL import Image
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (84, 84, 3), dtype=np.uint8))
    pre, meta = mtl_args("pretrain"), mtl_args("meta_train")
    pre.image_size = meta.image_size = 80
    assert MTL.image_transform(pre, training=True)(image).shape == [3, 80, 80]
    first = MTL.image_transform(meta, training=True)(image)
    np.testing.assert_array_equal(first.numpy(), MTL.image_transform(meta, training=True)(image).numpy())
    # Resize(92) -> CenterCrop(80), normalised with the MTL constants
    from data.mtl_transforms import MTL_STATS
    resized = np.asarray(image.resize((92, 92), Image.BILINEAR), dtype=np.float32)[6:86, 6:86] / 255
    expected = (resized - np.asarray(MTL_STATS[0], np.float32)) / np.asarray(MTL_STATS[1], np.float32)
    np.testing.assert_allclose(first.numpy().transpose(1, 2, 0), expected, atol=0.05)


# ----- hard-task meta-batch -------------------------------------------------------------------------
def test_worst_class_ranks_accuracy_then_loss():
    logits = paddle.to_tensor(np.array([[5, 0, 0], [5, 0, 0],        # class 0: right twice
                                        [0, 1, 0], [0, 0, 1],        # class 1: one right
                                        [0, 0, 2], [1, 0, 0]], dtype="float32"))   # class 2: one right, one wrong
    assert worst_class(logits, 3, 2) in (1, 2)
    # classes 1 and 2 tie at 50%; class 1's queries have the higher cross-entropy
    assert worst_class(logits, 3, 2) == 1


class _Labels:
    """A dataset stand-in: only labels (HardTaskEpisodes reads images through `read`)."""

    def __init__(self, n_classes: int, per_class: int):
        self.labels = np.repeat(np.arange(n_classes), per_class)


def _regular(classes_per_task, shot=1, query=2):
    for classes in classes_per_task:
        labels = [c for c in classes for _ in range(shot)] + [c for c in classes for _ in range(query)]
        yield None, paddle.to_tensor(labels)


def test_hard_tasks_follow_each_meta_batch_with_fresh_images_of_the_failure_classes():
    data = _Labels(12, 10)
    regular = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    ht = HardTaskEpisodes(_regular(regular), 4, data, way=3, shot=1, query=2, meta_batch=2, hard_tasks=1,
                          seed=(0, 0, 0))
    ht.read = lambda episode: (None, paddle.to_tensor(data.labels[episode]))
    worst = [2, 0, 1, 2]   # position of the failing class in each regular task
    seen, task = [], 0
    for _, labels in ht:
        seen.append(labels.numpy().tolist())
        if not ht.regular:   # a hard task adds no failure class
            ht.observe(paddle.zeros([6, 3]))
            continue
        logits = np.eye(3, dtype="float32")[np.repeat(np.arange(3), 2)]           # every query right ...
        logits[2 * worst[task]:2 * worst[task] + 2] = np.eye(3, dtype="float32")[(worst[task] + 1) % 3]  # ... but these
        ht.observe(paddle.to_tensor(logits))
        task += 1
    assert len(seen) == len(ht) == 6
    failed_first, failed_second = {regular[0][2], regular[1][0]}, {regular[2][1], regular[3][2]}
    for hard, failed in ((seen[2], failed_first), (seen[5], failed_second)):
        support = hard[:3]
        assert failed <= set(support), (hard, failed)        # both failure classes are in the hard task
        assert len(set(support)) == 3                        # completed with one other class
    for episode in ht.hard_episodes:                         # fresh images: distinct within the task
        assert len(set(episode)) == len(episode)


def test_hard_tasks_use_only_failure_classes_when_there_are_enough():
    data = _Labels(20, 10)
    regular = [[c, c + 1, c + 2] for c in range(0, 18, 3)]
    ht = HardTaskEpisodes(_regular(regular), 6, data, way=3, shot=1, query=2, meta_batch=3, hard_tasks=2,
                          seed=(1, 2, 3))
    ht.read = lambda episode: (None, paddle.to_tensor(data.labels[episode]))
    failures = []
    for _, labels in ht:
        if ht.regular:
            classes = labels.numpy()[:3].tolist()
            failures.append(classes[0])
            logits = np.tile(np.eye(3, dtype="float32")[[1, 1, 1, 1, 2, 2]], 1)  # class 0 always wrong
            ht.observe(paddle.to_tensor(logits))
        else:
            ht.observe(paddle.zeros([6, 3]))
    assert len(ht.hard_episodes) == 4
    for k, episode in enumerate(ht.hard_episodes):
        meta_batch = set(failures[3 * (k // 2):3 * (k // 2) + 3])
        assert set(data.labels[episode[:3]].tolist()) == meta_batch
