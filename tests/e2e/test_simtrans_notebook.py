"""notebooks/simtrans.ipynb's quick preset as committed (data and work folders in tmp_path): the
weak-shot benchmark, the four steps, the sample weights of one novel class and the similarity
matrix, and each step's model tested above chance."""
import re

from tests.e2e.notebooks import run_quick


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("simtrans", tmp_path, monkeypatch)
    assert re.search(r"ROC-AUC of the savg1 weights .*: [\d.]+$", run.text, re.M), run.text[-3000:]
    for title in ("naive", "sample weights", "sample weights + graph"):
        found = re.search(rf"^{re.escape(title)}: \d+ Test Acc = ([\d.]+)% \+- [\d.]+%$", run.text, re.M)
        assert found and float(found.group(1)) > 10.0, title  # 20 novel classes: chance is 5%
    run.figures(["simnet_history", "sample_weights", "similarity_matrix", "Conv4_simtrans_naive",
                 "Conv4_simtrans_main_savg1", "Conv4_simtrans_alternate_GCN_a0.1_avg1"])
