"""The weak-shot workflow (SimTrans, methods/simtrans.py): what pretrain.py and test.py do for a
method whose `workflow` is "weak_shot".

Training reads whole splits of a weak-shot folder (data/weakshot.py) instead of base.json:
the web images (step 0, or weighted by the similarity folder in steps 3a/3b) or pairs of base
and web images (step 1, the SimNet); the optimizer starts fresh every epoch, as the reference
re-creates it; validation (and model selection, as the reference does) is on the clean test
images. Testing is whole-split classification, or for a SimNet step 2: the similarity folder.
Every check that can fail on user input runs before anything is written.
"""
import argparse
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import paddle
import paddle.nn.functional as F

from data.samplers import rank_share
from data.similarity_folder import read_similarity, write_similarity
from data.weakshot import WeakShot, injected_files, load_weakshot
from data.weakshot_batches import JoinedImages, WeightedImages, f1_batches, pair_training_batches, shuffled_batches
from frn.checkpoint import load_weights, read_checkpoint
from frn.engine import allow_shared_memory, classify_split, eval_loader, extract_features, loader
from frn.results import append_result, check_result_file, result_path, run_description, sha256, task_record
from frn.runs import build_model, build_training, image_list, run_training, training_run_folder
from methods import METHODS
from methods.simtrans import (
    CLASSIFIER_FAMILY,
    GraphRegularisedClassifier,
    SimNet,
    SimNetOptions,
    SimTransStage,
    WeightedClassifierOptions,
)
from methods.simtrans_parts import pair_targets, sample_weights, similarity_matrix
from network.resnet50 import imagenet_state, imagenet_weights_file
from utils.device import rank_and_world, seed_everything, select_device
from utils.errors import UserError
from utils.optim import reset_optimizer_state
from utils.options import replace
from utils.stats import mean_and_interval, roc_auc


# ----------------------------------------------------------------------------------------
# the weak-shot folder and the checkpoints passed between steps
# ----------------------------------------------------------------------------------------
def need_weakshot(args: argparse.Namespace) -> WeakShot:
    """The weak-shot folder --data_path, checked; a one-line error when it is not one."""
    if not args.data_path or not os.path.isfile(os.path.join(args.data_path, "web.json")):
        raise UserError(f"--data_path {args.data_path!r} is not a weak-shot folder (no web.json); build one "
                        f"with python -m data.weakshot")
    return load_weakshot(args.data_path)


def check_origin(identity: Optional[dict], flag: str, path: str, family: str, weakshot: WeakShot) -> dict:
    """Refuse a checkpoint of another kind or made on another weak-shot dataset, in one line;
    returns the accepted checkpoint's `identity`."""
    if not identity or identity.get("family") != family:
        found = f"a {identity.get('family')} model" if identity else "a model without identity"
        raise UserError(f"{flag} {path} holds {found}, not a {family}; pass the best_model.pdparams of "
                        f"the right SimTrans step")
    made_on = identity.get("weakshot")
    if made_on is not None and made_on != weakshot.fingerprint:
        raise UserError(f"{flag} {path} was made on another weak-shot dataset (fingerprint {made_on}, "
                        f"--data_path has {weakshot.fingerprint}); pass the run of this dataset")
    return identity


def load_backbone_weights(model: SimTransStage, source: str, flag: str,
                          ckpt: Optional[Dict[str, Any]] = None) -> None:
    """Initialise `model.feature_extractor`: `imagenet`/`1` (Paddle's ResNet-50 weights),
    `none`/`0`, or a .pdparams whose `feature_extractor.*` entries fit (e.g. a converted
    torchvision checkpoint). `ckpt` is that .pdparams when the caller has read it already."""
    if source in ("none", "0", ""):
        return
    own = model.feature_extractor.state_dict()
    if source in ("imagenet", "1"):
        if model.backbone_name != "ResNet50":
            raise UserError(f"{flag} {source}: ImageNet weights exist for ResNet50 only, not {model.backbone_name}; "
                            f"pass 0/none to train from scratch")
        state = imagenet_state()
    else:
        ckpt = read_checkpoint(source, flag) if ckpt is None else ckpt
        prefix = "feature_extractor."
        state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise UserError(f"{flag} {source} has no backbone weights that fit --model {model.backbone_name} "
                        f"(first misfit: {wrong[0]!r})")
    model.feature_extractor.set_state_dict({k: state[k] for k in own})


def imagenet_start(args: argparse.Namespace) -> Optional[Tuple[str, str]]:
    """(flag, source) of the ImageNet weights a training step starts from, or None: steps 0 and 3a
    read --imagenet_pretrained (unless --pretrain_path), the SimNet --similarity_pretrained when it
    is 'imagenet'; step 3b starts from step 3a."""
    if args.stage != "pretrain" or getattr(args, "pretrain_path", ""):
        return None
    method = METHODS[args.method]
    if issubclass(method, GraphRegularisedClassifier):
        return None
    if issubclass(method, SimNet):
        source = args.options.similarity_pretrained
        return ("--similarity_pretrained", source) if source == "imagenet" else None
    return "--imagenet_pretrained", str(args.options.imagenet_pretrained)


def check_start(flag: str, source: str) -> None:
    """One line unless the starting weights are there: a converted file must exist; Paddle's
    weights ('1', 'imagenet') are downloaded now (once, into Paddle's cache)."""
    if source in ("none", "0", ""):
        return
    if source in ("imagenet", "1"):
        imagenet_weights_file()
    elif not os.path.isfile(source):
        raise UserError(f"{flag} {source} is not a file: convert torchvision's ImageNet ResNet-50 (the official start) "
                        f"with python -m frn.convert --model ResNet50 --method simtrans_naive resnet50-19c8e357.pth "
                        f"{source}, or pass 1 (Paddle's ImageNet weights, downloaded) or 0 (random)")


def preflight(args: argparse.Namespace, produced: Sequence[str] = ()) -> None:
    """The config runner's check of a weak-shot step's ImageNet start, before any stage writes
    (a source below a run folder of the config, `produced`, comes from an earlier stage)."""
    start = imagenet_start(args)
    if start is None:
        return
    flag, source = start
    inside = [folder for folder in produced if os.path.abspath(source).startswith(os.path.abspath(folder) + os.sep)]
    if not inside:
        check_start(flag, source)


def load_simnet(path: str, flag: str, weakshot: WeakShot) -> SimNet:
    """A trained SimNet (step 1) in eval mode, built as its checkpoint describes."""
    ckpt = read_checkpoint(path, flag)
    identity = check_origin(ckpt.get("identity"), flag, path, "SimNet", weakshot)
    options = SimNetOptions(method="simtrans_simnet", model=identity["model"],
                            head_type=identity.get("head_type", SimNetOptions.head_type),
                            domain_bn=identity.get("domain_bn", SimNetOptions.domain_bn), weakshot=weakshot.fingerprint)
    simnet = cast(SimNet, build_model(options))  # options.method is a SimNet
    load_weights(simnet, path, flag, ckpt=ckpt)
    simnet.eval()
    return simnet


def web_sample_weights(weakshot: WeakShot, matrices: List[np.ndarray], weight_type: str,
                       weight_norm: str) -> np.ndarray:
    """One weight per web.json image (classes normalised separately)."""
    labels = np.asarray(weakshot.web["image_labels"])
    weights = np.ones(len(labels), dtype=np.float32)
    for label, matrix in enumerate(matrices):
        weights[labels == label] = sample_weights(matrix, weight_type, weight_norm)
    return weights


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
@paddle.no_grad()
def pair_f1(simnet: SimNet, dataset, batches: List[List[int]], num_workers: int = 0) -> Tuple[float, float]:
    """F1 (%) of the 'similar' class over every ordered pair of every batch (diagonal included,
    counts pooled over the batches) and the mean pair cross-entropy, in eval mode."""
    simnet.eval()
    tp = fp = fn = 0
    losses = []
    for images, labels in eval_loader(dataset, batches, num_workers):
        logits = simnet.pair_logits(images)
        targets = pair_targets(labels)
        predicted = logits.argmax(axis=1)
        tp += int(((predicted == 1) & (targets == 1)).sum())
        fp += int(((predicted == 1) & (targets == 0)).sum())
        fn += int(((predicted == 0) & (targets == 1)).sum())
        losses.append(float(F.cross_entropy(logits, targets)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100.0 * f1, float(np.mean(losses))


def split_images(args: argparse.Namespace, splits: Sequence[str], training: bool):
    """The images of one weak-shot split, or of several joined (classes of the first split first)."""
    parts = [image_list(args, split, training) for split in splits]
    return parts[0] if len(parts) == 1 else JoinedImages(parts)


def novel_accuracy(dataset, correct: np.ndarray) -> Optional[float]:
    """Accuracy (%) on the novel classes' images of a joined base + novel test set (None otherwise)."""
    if not isinstance(dataset, JoinedImages):
        return None
    novel = dataset.labels >= dataset.first_part_classes
    return 100.0 * float(correct[novel].mean()) if novel.any() else None


def classifier_validator(args: argparse.Namespace, model, splits: Sequence[str]):
    """Top-1 accuracy on the clean test images: the reference selects its model (and stops
    early) on the test set, as reproduced here; there is no validation split. On a base + novel
    test set (CleanAll) the novel images' accuracy is reported too."""
    test = split_images(args, splits, training=False)

    def validate():
        accuracy, loss, correct = classify_split(model, test, num_workers=args.num_workers, desc="test")
        novel = novel_accuracy(test, correct)
        return (accuracy, loss) if novel is None else (accuracy, loss, {"novel_acc": novel})
    return validate


def simnet_validator(args: argparse.Namespace, simnet: SimNet):
    """F1 of the 'similar' pairs on novel test batches (model selection, as the reference),
    and on base test batches (reported)."""
    novel = image_list(args, "novel", training=False)
    sets = [("novel", novel, f1_batches(novel.labels, args.seed, args.options.f1_batches))]
    if os.path.isfile(os.path.join(args.data_path, "base_test.json")):
        base = image_list(args, "base_test", training=False)
        sets.append(("base", base, f1_batches(base.labels, args.seed + 1, args.options.f1_batches)))

    def validate():
        scores = {name: pair_f1(simnet, data, batches, args.num_workers) for name, data, batches in sets}
        f1, loss = scores["novel"]
        return f1, loss, ({"base_f1": scores["base"][0]} if "base" in scores else {})
    return validate


# ----------------------------------------------------------------------------------------
# pretrain.py
# ----------------------------------------------------------------------------------------
def this_rank(batches: List[List[int]]) -> List[List[int]]:
    """This process's share of an epoch's batches (all of them in a single-process run): the
    same number on every rank (data.samplers.rank_share pads the list)."""
    return rank_share(batches, paddle.distributed.get_rank(), paddle.distributed.get_world_size())


def simnet_data(args: argparse.Namespace):
    """(dataset, batches(epoch), classes) of step 1: pair batches of the A images (--source_set: the
    clean base images) then of the B images (the web images), with --noisy_frac's noisy batches."""
    options: SimNetOptions = args.options
    source = image_list(args, options.source_split(), training=True)
    target = image_list(args, "web" if options.target_domain == "novel_train" else "novel", training=True)
    for name, part in ((options.source_set, source), ("B", target)):
        if args.batch_size > len(part):
            raise UserError(f"--batch_size {args.batch_size} exceeds the {len(part)} {name} images; lower it")

    def batches(epoch: int) -> List[List[int]]:
        return this_rank(pair_training_batches(source.labels, target.labels, len(source), args.batch_size,
                                               options.batch_class_num, options.batch_class_num_B, args.seed, epoch,
                                               options.noisy_frac))
    return paddle.io.ConcatDataset([source, target]), batches, source.num_classes


def classifier_data(args: argparse.Namespace, weakshot: WeakShot):
    """(dataset, batches(epoch), classes) of steps 0, 3a, 3b: the training split of the step,
    with the similarity folder's sample weights in steps 3a and 3b."""
    options = args.options
    dataset = split_images(args, options.splits()[0], training=True)
    fraction = 1.0
    batch_size = lambda epoch: args.batch_size  # noqa: E731
    if isinstance(options, WeightedClassifierOptions):
        weights = web_sample_weights(weakshot, read_similarity(options.load_dir, weakshot), options.weight_type,
                                     options.normalisation())
        dataset, fraction = WeightedImages(dataset, weights), options.epoch_fraction
        batch_size = lambda epoch: options.batch_size(epoch, args.batch_size)  # noqa: E731

    def batches(epoch: int) -> List[List[int]]:
        return this_rank(shuffled_batches(len(dataset), batch_size(epoch), args.seed, epoch, fraction))
    return dataset, batches, len(dataset.label_names)


def start_weights(args: argparse.Namespace, model: SimTransStage, weakshot: WeakShot) -> None:
    """Each step's starting point, loaded before anything is written: the SimNet from
    --similarity_pretrained (default in the reference: the step-0 model); step 3b from the
    step-3a run (--pretrain_path) with the step-1 SimNet as its graph; the other steps from
    --pretrain_path or --imagenet_pretrained."""
    if isinstance(model, SimNet):
        source = model.options.similarity_pretrained
        if not source:
            raise UserError("--similarity_pretrained is required: the step-0 run's best_model.pdparams "
                            "(pretrain.py --method simtrans_naive), or 'imagenet' or 'none'")
        ckpt = None
        if source not in ("imagenet", "none"):
            ckpt = read_checkpoint(source, "--similarity_pretrained")
            check_origin(ckpt.get("identity"), "--similarity_pretrained", source, CLASSIFIER_FAMILY, weakshot)
        load_backbone_weights(model, source, "--similarity_pretrained", ckpt=ckpt)
        return
    if isinstance(model, GraphRegularisedClassifier):
        if not args.pretrain_path:
            raise UserError("--pretrain_path is required: the step-3a run's best_model.pdparams "
                            "(the reference's --resume)")
        check_origin(read_checkpoint(args.pretrain_path, "--pretrain_path").get("identity"), "--pretrain_path",
                     args.pretrain_path, CLASSIFIER_FAMILY, weakshot)
        if not model.options.similarity_net:
            raise UserError("--similarity_net is required: the step-1 run's best_model.pdparams")
        model.use_similarity_net(load_simnet(model.options.similarity_net, "--similarity_net", weakshot))
    elif not args.pretrain_path:
        source = str(args.options.imagenet_pretrained)
        if source not in ("imagenet", "1"):  # Paddle's weights are fetched (or refused) by the load itself
            check_start("--imagenet_pretrained", source)
        load_backbone_weights(model, source, "--imagenet_pretrained")
    if args.pretrain_path:  # the reference's --resume: a model to start from
        load_weights(model, args.pretrain_path, "--pretrain_path")


def weak_shot_step(model, batch: list):
    """One training step's forward: images, labels and, when the batch has them, sample weights."""
    images, labels, *weights = batch
    return model(images, labels, weights[0] if weights else None)


def train(args: argparse.Namespace) -> None:
    """pretrain.py for a SimTrans step."""
    rank_and_world()  # a multi-process run's process group first, before the device and the model
    select_device(args.gpu, args.threads)
    allow_shared_memory(not args.no_shared_memory)
    seed_everything(args.seed)
    weakshot = need_weakshot(args)
    args.options = replace(args.options, weakshot=weakshot.fingerprint)
    is_simnet = issubclass(METHODS[args.method], SimNet)
    dataset, batches, num_classes = simnet_data(args) if is_simnet else classifier_data(args, weakshot)
    if args.num_classes and args.num_classes < num_classes:
        raise UserError(f"--num_classes {args.num_classes} is smaller than the {num_classes} training "
                        f"classes; drop the flag or raise it")
    model = cast(SimTransStage, build_model(args.options, args.num_classes or num_classes))  # a weak-shot method
    start_weights(args, model, weakshot)
    validate = None
    if args.val != "none":
        validate = (simnet_validator(args, cast(SimNet, model)) if is_simnet
                    else classifier_validator(args, model, args.options.splits()[1]))

    def make_batches(epoch: int):
        epoch_batches = batches(epoch)
        return loader(dataset, epoch_batches, args.num_workers), len(epoch_batches)

    holder: Dict[str, Any] = {}

    def before_epoch(epoch: int) -> None:
        reset_optimizer_state(holder["optimizer"])  # the reference re-creates its optimizers every epoch
        model.start_epoch(epoch)

    _, iters_per_epoch = make_batches(0)
    optimizer, scheduler = build_training(args, model, iters_per_epoch)
    holder["optimizer"] = optimizer
    run_training(args, model, training_run_folder(args), make_batches, validate, step=weak_shot_step,
                 before_epoch=before_epoch, optimizer_and_schedule=(optimizer, scheduler))


# ----------------------------------------------------------------------------------------
# test.py
# ----------------------------------------------------------------------------------------
def test(args: argparse.Namespace) -> List[float]:
    """test.py for a SimTrans step: step 2 for a SimNet, else top-1 accuracy of a classifier."""
    select_device(args.gpu, args.threads)
    allow_shared_memory(not args.no_shared_memory)
    seed_everything(args.seed)
    if not args.model_path:
        raise UserError("--model_path is required: the .pdparams checkpoint to test")
    results = result_path(args)
    check_result_file(results)
    start = time.time()
    if issubclass(METHODS[args.method], SimNet):
        scores, record = similarity_step(args)
    else:
        scores, record = test_classifier(args)
    if results:
        append_result(results, task_record(run_description(args, sha256(args.model_path)), **record,
                                           seed=args.seed, wall_seconds=round(time.time() - start, 3)))
        print(f"results appended to {results}")
    return scores


def test_classifier(args: argparse.Namespace) -> Tuple[List[float], Dict[str, Any]]:
    """eval_model.py: top-1 accuracy of --model_path on the clean test images (--split, default
    novel), printed as `N Test Acc = m% +- ci%` (ci: 1.96 * binomial standard error); returns
    the accuracy and the result file's record of it."""
    ckpt = read_checkpoint(args.model_path)
    options = args.options
    splits = options.splits()[1] if args.split == "novel" else (args.split,)
    split = "+".join(splits)
    test_set = split_images(args, splits, training=False)
    identity = check_origin(ckpt.get("identity"), "--model_path", args.model_path, CLASSIFIER_FAMILY,
                            need_weakshot(args))
    if "fc.weight" not in ckpt["state_dict"]:
        raise UserError(f"--model_path {args.model_path} has no classifier (fc.weight); pass the best_model.pdparams "
                        f"of step 0 or 3")
    n_classes = int(ckpt["state_dict"]["fc.weight"].shape[1])
    if n_classes != test_set.num_classes:
        raise UserError(f"--model_path {args.model_path} classifies {n_classes} classes but the {split} split "
                        f"has {test_set.num_classes}; pass the matching --data_path")
    model = build_model(replace(options, weakshot=identity.get("weakshot")), n_classes)
    load_weights(model, args.model_path, ckpt=ckpt)  # refuses a checkpoint of another --model in one line
    accuracy, _, correct = classify_split(model, test_set, num_workers=args.num_workers, desc="test")
    mean, interval = mean_and_interval(100.0 * correct)
    print(f"{len(test_set)} Test Acc = {mean:.2f}% +- {interval:.2f}%", flush=True)
    record = {"accuracy": float(mean), "interval": float(interval), "images": len(test_set), "split": split}
    novel = novel_accuracy(test_set, correct)
    if novel is not None:
        print(f"novel classes' test images: {novel:.2f}%", flush=True)
        record["novel_accuracy"] = novel
    return [accuracy], record


def similarity_step(args: argparse.Namespace) -> Tuple[List[float], Dict[str, Any]]:
    """GAN_noise_detection.py: the similarity matrix of each novel class's web images into
    --save_dir; then the pair F1 on novel test images and, on a benchmark, how well the
    default sample weights separate clean from injected web images (ROC-AUC). Returns the
    scores and the result file's record of them."""
    weakshot = need_weakshot(args)
    simnet = load_simnet(args.model_path, "--similarity_net/--model_path", weakshot)
    args.options = replace(args.options, model=simnet.backbone_name, head_type=simnet.options.head_type)
    save_dir = args.options.save_dir or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "similarity")
    web = image_list(args, "web", training=False)
    features = extract_features(simnet, web, range(len(web)), num_workers=args.num_workers)
    per_class = []
    for label in range(len(weakshot.novel_classes)):
        rows = np.flatnonzero(web.labels == label)
        class_features = features[paddle.to_tensor(rows)]
        matrix = similarity_matrix(simnet.similarity_head, class_features).numpy()
        per_class.append(([web.file_names[i] for i in rows], class_features.numpy(), matrix))
    write_similarity(save_dir, weakshot, args.model_path, per_class)
    print(f"similarity matrices of {len(web)} web images in {len(per_class)} novel classes written to {save_dir}")
    novel = image_list(args, "novel", training=False)
    f1, _ = pair_f1(simnet, novel, f1_batches(novel.labels, args.seed, args.options.f1_batches), args.num_workers)
    print(f"{len(novel)} novel test images: pair F1 = {f1:.2f}%")
    scores = [f1]
    record: Dict[str, Any] = {"pair_f1": float(f1), "novel_images": len(novel), "web_images": len(web),
                              "similarity_folder": os.path.abspath(save_dir)}
    injected = injected_files(args.data_path)
    if injected is not None:
        clean = np.asarray([name not in injected for name in web.file_names])
        for weight_type in ("savg1", "avg1"):
            weights = web_sample_weights(weakshot, [m for _, _, m in per_class], weight_type, "one_mean")
            auc = roc_auc(weights, clean)
            print(f"denoising ROC-AUC of the {weight_type} weights (clean vs the {int((~clean).sum())} "
                  f"injected web images): {auc:.3f}")
            scores.append(auc)
            record[f"roc_auc_{weight_type}"] = float(auc)
    return scores, record
