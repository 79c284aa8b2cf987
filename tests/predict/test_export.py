"""export.py: the graphs convert (ResNet-12 FRN, the paper's model, included), --backbone_only,
classes.json, Paddle 2's file layout, replacing an earlier export."""
import json
import os
import subprocess

import numpy as np
import paddle
import pytest

from data.images import load_image
from frn.args import parse, test_parser
from frn.checkpoint import load_weights, save_model
from frn.export import saved_files
from frn.predict import sha256_of
from frn.runs import build_model, image_pipeline
from tests.conftest import ROOT, run_entry, run_script
from tests.predict.helpers import assert_same_predictions, load_infer, model_flags, random_checkpoint, read_csv


def run(script, *argv):
    code, out, err = run_entry(script, list(argv))
    assert code == 0, err
    return out


def test_resnet12_frn_exports_and_infers_like_predict(episode, tmp_path):
    """FRN's ridge regression (a batched linalg.inv per class) and ResNet-12's DropBlock in the graph."""
    flags = model_flags("meta_frn")
    flags[flags.index("--model") + 1] = "ResNet12"
    paddle.seed(0)
    save_model(build_model(parse(test_parser(), flags).options), str(tmp_path / "m.pdparams"))
    checkpoint = tmp_path / "m.pdparams"
    common = [*flags, "--model_path", checkpoint, "--support", episode.support]
    run("predict.py", *common, "--query", episode.query, "--out", tmp_path / "p.csv")
    out = run("export.py", *common, "--out_dir", tmp_path / "exported")
    assert "Paddle Inference matches the dynamic graph" in out
    load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query), "--out",
                      str(tmp_path / "i.csv")])
    p, i = read_csv(tmp_path / "p.csv"), read_csv(tmp_path / "i.csv")
    assert [r["prediction"] for r in p] == [r["prediction"] for r in i]
    # oneDNN on: Paddle 3.3's conv+LeakyReLU fusion crashed the process (SIGSEGV) on ResNet-12
    # until infer.py turned that pass off; a fresh process, so a crash fails this test only
    on = run_script("infer.py", "--model_dir", tmp_path / "exported", "--query", episode.query, "--out",
                    tmp_path / "on.csv", "--onednn")
    assert on.returncode == 0, on.stderr[-2000:]
    assert_same_predictions(p, read_csv(tmp_path / "on.csv"), episode.classes, atol=1e-4)  # see test_three_ways


def test_classes_json_holds_classes_preprocessing_and_the_checkpoint(episode, tmp_path):
    checkpoint = random_checkpoint("protonet", tmp_path / "m.pdparams")
    run("export.py", *model_flags("protonet"), "--model_path", checkpoint, "--support", episode.support,
        "--out_dir", tmp_path / "exported")
    meta = json.loads((tmp_path / "exported" / "classes.json").read_text())
    assert meta["classes"] == episode.classes and meta["kind"] == "classifier"
    assert meta["checkpoint"]["sha256"] == sha256_of(str(checkpoint))
    assert meta["input"]["shape"] == [None, 3, 32, 32] and meta["preprocessing"]["channel_order"] == "RGB"
    ops = [s["op"] for s in meta["preprocessing"]["steps"]]
    assert ops == ["resize", "center_crop", "to_float", "normalize", "to_chw"]
    assert meta["support"]["counts"] == {name: 2 for name in episode.classes}
    pir = int(paddle.__version__.split(".")[0]) >= 3 or paddle.__version__.startswith("0.0")  # 0.0.0: a develop build
    assert meta["model_file"] == ("model.json" if pir else "model.pdmodel")
    for name in (meta["model_file"], meta["params_file"]):
        assert (tmp_path / "exported" / name).is_file(), name


def test_backbone_only_exports_the_feature_extractor(tmp_path, episode):
    checkpoint = random_checkpoint("deepemd", tmp_path / "m.pdparams")  # deepemd: only its backbone exports
    run("export.py", *model_flags("deepemd"), "--model_path", checkpoint, "--out_dir", tmp_path / "exported",
        "--backbone_only")
    meta = json.loads((tmp_path / "exported" / "classes.json").read_text())
    assert meta["kind"] == "features" and meta["classes"] == []
    infer = load_infer()
    got = infer.run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                     "--out", str(tmp_path / "f.csv")])
    options = parse(test_parser(), model_flags("deepemd")).options
    model = build_model(options)
    load_weights(model, str(checkpoint))
    model.eval()
    transform = image_pipeline(options, training=False)
    images = paddle.to_tensor(np.stack([np.asarray(transform(load_image(p))) for p in got["paths"]]))
    with paddle.no_grad():
        expected = model.feature_extractor(images).numpy()
    np.testing.assert_allclose(got["outputs"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    rows = read_csv(tmp_path / "f.csv")
    assert len(rows) == 15 and len(rows[0]) == 1 + expected[0].size


def test_an_earlier_export_is_replaced_and_a_foreign_folder_refused(episode, tmp_path):
    flags = [*model_flags("protonet"), "--model_path", random_checkpoint("protonet", tmp_path / "m.pdparams"),
             "--support", episode.support]
    run("export.py", *flags, "--out_dir", tmp_path / "exported")
    (tmp_path / "exported" / "stale.txt").write_text("from before")
    run("export.py", *flags, "--out_dir", tmp_path / "exported")
    assert not (tmp_path / "exported" / "stale.txt").exists() and (tmp_path / "exported" / "classes.json").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    code, _, err = run_entry("export.py", [*flags, "--out_dir", foreign])
    assert code == 2 and "other files" in err and (foreign / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize("suffix", [".json", ".pdmodel"])
def test_either_paddle_program_format_is_found(tmp_path, suffix):
    """Paddle 3 saves a PIR program (model.json), Paddle 2 a ProgramDesc (model.pdmodel): export.py
    records which, infer.py loads what classes.json names. (Paddle 3.3 cannot write the old format
    any more, FLAGS_enable_pir_api=0 fails in to_static: the real Paddle 2 round trip is the test
    below, with FSL_PADDLE2_PYTHON.)"""
    (tmp_path / f"model{suffix}").write_text("{}")
    (tmp_path / "model.pdiparams").write_bytes(b"")
    assert saved_files(str(tmp_path)) == (f"model{suffix}", "model.pdiparams")
    (tmp_path / "classes.json").write_text(json.dumps({"format": "fsl-export", "model_file": f"model{suffix}",
                                                       "params_file": "model.pdiparams"}))
    meta, model_file, params_file = load_infer().read_export(str(tmp_path))
    assert model_file.endswith(f"model{suffix}") and params_file.endswith("model.pdiparams")


PADDLE2_PYTHON = os.environ.get("FSL_PADDLE2_PYTHON", "")


@pytest.mark.skipif(not PADDLE2_PYTHON, reason="set FSL_PADDLE2_PYTHON to a Python with Paddle 2.x to test its format")
@pytest.mark.parametrize("method", ["meta_frn", "neg_margin"])
def test_paddle2_exports_a_pdmodel_that_infers_like_predict(method, episode, tmp_path):
    """With Paddle 2.x, export.py writes model.pdmodel, infer.py reads it (with Paddle 2 and with
    this Paddle), and the predictions are predict.py's."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")

    def paddle2(script, *argv):
        result = subprocess.run([PADDLE2_PYTHON, str(ROOT / script), *map(str, argv)], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    flags = [*model_flags(method), "--model_path", random_checkpoint(method, tmp_path / "m.pdparams"),
             "--support", episode.support]
    run("predict.py", *flags, "--query", episode.query, "--out", tmp_path / "p.csv")
    assert "Paddle 2." in paddle2("export.py", *flags, "--out_dir", tmp_path / "exported")
    assert json.loads((tmp_path / "exported" / "classes.json").read_text())["model_file"] == "model.pdmodel"
    paddle2("infer.py", "--model_dir", tmp_path / "exported", "--query", episode.query, "--out", tmp_path / "i2.csv")
    load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                      "--out", str(tmp_path / "i3.csv")])
    expected = [r["prediction"] for r in read_csv(tmp_path / "p.csv")]
    for name in ("i2.csv", "i3.csv"):
        assert [r["prediction"] for r in read_csv(tmp_path / name)] == expected, name
    # and a Paddle 3 export (model.json) is refused by Paddle 2's infer.py in one line
    run("export.py", *flags, "--out_dir", tmp_path / "pir")
    refused = subprocess.run([PADDLE2_PYTHON, str(ROOT / "infer.py"), "--model_dir", str(tmp_path / "pir"), "--query",
                              str(episode.query), "--out", str(tmp_path / "x.csv")], env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "is a Paddle 3 (PIR) program" in refused.stderr.strip().splitlines()[-1]
