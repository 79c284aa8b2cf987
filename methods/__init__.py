"""Methods by `--method` name. Adding a method = one file in this folder + one line here."""
import utils  # noqa: F401  (first: its warning filters apply before Paddle is imported)

# isort: split
from typing import Dict, Type

from methods.base import FewShotMethod, MethodOptions
from methods.deepemd import DeepEMD
from methods.frn import FRN
from methods.mtl import MTL
from methods.neg_margin import NegMargin
from methods.protonet import ProtoNet
from methods.simtrans import GraphRegularisedClassifier, SimNet, WebClassifier, WeightedClassifier

METHODS: Dict[str, Type[FewShotMethod]] = {
    "protonet": ProtoNet,
    "deepemd": DeepEMD,
    "mtl": MTL,          # Meta-Transfer Learning: pretrain, meta_train and test stages
    "stl_frn": FRN,   # whole-class pre-training with learned class pools
    "meta_frn": FRN,  # episodic FRN with the auxiliary loss
    "neg_margin": NegMargin,
    # SimTrans, weak-shot (not episodic): steps 0, 1 (+2 via test.py), 3a, 3b of the reference
    "simtrans_naive": WebClassifier,
    "simtrans_simnet": SimNet,
    "simtrans_main": WeightedClassifier,
    "simtrans_alternate": GraphRegularisedClassifier,
}


def options_for(method: str, **values) -> MethodOptions:
    """The typed options of a registered method: its declared defaults, then `values`; checked."""
    options = METHODS[method].Options(method=method, **values)
    options.check()
    return options
