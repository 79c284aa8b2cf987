"""Same numbers three ways, on the embedded demo data: `test.py --episodes_file` on a one-episode
file, `predict.py` on the same episode written out as a support folder and a query folder, and
`infer.py` on the model `export.py` made of it give the same prediction for every query, for
every method that exports (and test.py / predict.py for DeepEMD, which does not).

Tolerances (float32 scores):
- predict.py vs infer.py, 1e-5 relative (absolute: 1e-5 of the largest score, as untrained
  models score near 0): the exported graph runs the same CPU kernels on bit-identical inputs
  (the preprocessing is checked pixel for pixel in test_preprocess.py; Paddle Inference with
  oneDNN off), so the scores differ by a few float32 ulps at most (eps = 6e-8; measured: 0 for
  FRN, Negative-Margin and MTL, 1.3e-7 relative for ProtoNet, whose graph fuses a few operations). A wrong graph
  differs in the leading digits.
- test.py vs predict.py, probabilities to 1e-4: test.py extracts the episode's images in one
  backbone batch, predict.py the support and the queries in separate batches, and a
  convolution's float32 sums may round differently with the batch (ulps of the features); a
  test-time fit (Negative-Margin: 40 SGD steps, MTL: 5) carries such differences on without
  amplifying them beyond ~1e-6 (measured), and the CSV prints 6 decimals (5e-7 rounding).
"""
import numpy as np
import pytest

from frn import predict as predict_workflow
from frn.args import parse, predict_parser
from tests.conftest import run_entry
from tests.predict.helpers import EXPORTABLE, load_infer, model_flags, probabilities, random_checkpoint, read_csv
from utils.stats import softmax

RTOL = ATOL = 1e-5  # ATOL is relative to the largest score
TEST_VS_PREDICT = 1e-4


def run_test_py(method, episode, checkpoint, tiny_data, out):
    code, stdout, err = run_entry("test.py", [*model_flags(method), "--data_path", tiny_data, "--split", "novel",
                                              "--model_path", checkpoint, "--episodes_file", episode.file,
                                              "--save_predictions", out])
    assert code == 0, err
    assert "1 Test Acc = " in stdout
    return {row["image"]: row for row in read_csv(out)}


def run_predict(method, episode, checkpoint, out):
    args = parse(predict_parser(), [*model_flags(method), "--model_path", str(checkpoint), "--support",
                                    str(episode.support), "--query", str(episode.query), "--out", str(out)])
    return predict_workflow.predict(args)


@pytest.mark.parametrize("method", EXPORTABLE)
def test_test_py_predict_py_and_infer_py_agree(method, episode, tiny_data, tmp_path):
    checkpoint = random_checkpoint(method, tmp_path / "model.pdparams")
    tested = run_test_py(method, episode, checkpoint, tiny_data, tmp_path / "test.csv")
    predicted = run_predict(method, episode, checkpoint, tmp_path / "predict.csv")
    code, _, err = run_entry("export.py", [*model_flags(method), "--model_path", checkpoint, "--support",
                                           episode.support, "--out_dir", tmp_path / "exported"])
    assert code == 0, err
    inferred = load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                                 "--out", str(tmp_path / "infer.csv")])

    # the same images in the same order, each scored once
    assert predicted["paths"] == inferred["paths"] and len(predicted["paths"]) == len(tested) == 15
    scale = np.abs(predicted["scores"]).max()
    np.testing.assert_allclose(inferred["outputs"], predicted["scores"], rtol=RTOL, atol=ATOL * scale)
    rows_p, rows_i = read_csv(tmp_path / "predict.csv"), read_csv(tmp_path / "infer.csv")
    assert [r["prediction"] for r in rows_p] == [r["prediction"] for r in rows_i]
    assert [r["image"] for r in rows_p] == [r["image"] for r in rows_i]
    for row in rows_p:  # test.py names images by file name, predict.py by path
        name = row["image"].split("/")[-1]
        assert tested[name]["prediction"] == row["prediction"], name
        assert abs(float(tested[name]["score"]) - float(row["score"])) < TEST_VS_PREDICT, name
    probs = probabilities(rows_p, episode.classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # 6-decimal rounding of 5 columns


def test_deepemd_predict_py_agrees_with_test_py(episode, tiny_data, tmp_path):
    """DeepEMD has no static export; its k-shot SFC fit runs once in predict.py, as in test.py."""
    checkpoint = random_checkpoint("deepemd", tmp_path / "model.pdparams")
    tested = run_test_py("deepemd", episode, checkpoint, tiny_data, tmp_path / "test.csv")
    run_predict("deepemd", episode, checkpoint, tmp_path / "predict.csv")
    for row in read_csv(tmp_path / "predict.csv"):
        name = row["image"].split("/")[-1]
        assert tested[name]["prediction"] == row["prediction"], name
        assert abs(float(tested[name]["score"]) - float(row["score"])) < TEST_VS_PREDICT, name


def test_the_proof_can_fail(episode, tiny_data, tmp_path):
    """Another checkpoint's predictions differ: the comparison above is not vacuous."""
    first = run_predict("protonet", episode, random_checkpoint("protonet", tmp_path / "a.pdparams"), tmp_path / "a.csv")
    second = run_predict("protonet", episode, random_checkpoint("protonet", tmp_path / "b.pdparams", seed=1),
                         tmp_path / "b.csv")
    scale = np.abs(first["scores"]).max()
    assert not np.allclose(first["scores"], second["scores"], rtol=RTOL, atol=ATOL * scale)


#: oneDNN's convolutions sum in another order than the plain CPU kernels: float32 rounding of
#: the scores, ~1e-7 relative (measured below 1e-6 in the probabilities); 1e-4 is far above it
#: and far below a wrong result
ONEDNN_PROBABILITIES = 1e-4


@pytest.mark.parametrize("method", EXPORTABLE)
def test_infer_with_onednn_agrees_and_keeps_stdout_clean(method, episode, tmp_path, capfd):
    """`infer.py --onednn` (Paddle 3.3 needs its conv+activation fusion off, see infer.py) gives
    predict.py's predictions, and Paddle's own prints stay off stdout, which carries the CSV."""
    checkpoint = random_checkpoint(method, tmp_path / "model.pdparams")
    predicted = run_predict(method, episode, checkpoint, tmp_path / "predict.csv")
    code, _, err = run_entry("export.py", [*model_flags(method), "--model_path", checkpoint, "--support",
                                           episode.support, "--out_dir", tmp_path / "exported"])
    assert code == 0, err
    capfd.readouterr()
    got = load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                            "--out", "-", "--onednn"])
    stdout = capfd.readouterr().out
    assert stdout.splitlines()[0].startswith("image,prediction,score,") and len(stdout.splitlines()) == 16
    np.testing.assert_allclose(got["probabilities"], softmax(predicted["scores"]), atol=ONEDNN_PROBABILITIES)
    top2 = np.sort(got["probabilities"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > ONEDNN_PROBABILITIES  # a near tie may go either way
    assert (got["probabilities"].argmax(1) == predicted["scores"].argmax(1))[clear].all()
