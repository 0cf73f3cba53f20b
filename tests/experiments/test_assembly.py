import pytest
import torch

from permlib.experiments import assembly
from permlib.experiments.assembly import AssemblyConfig
from permlib.nn.classifier import DigitClassifier

TINY = {"n_steps": 3, "batch_size": 4, "n_eval": 2, "judge_epochs": 1, "judge_batch": 200}


def test_classifier_shapes_and_errors():
    net = DigitClassifier(generator=torch.Generator().manual_seed(0))
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert net.predict(torch.rand(0, 1, 28, 28)).shape == (0,)
    with pytest.raises(ValueError, match=r"images must be \(B, 1, 28, 28\)"):
        net(torch.rand(3, 28, 28))
    with pytest.raises(ValueError, match="side"):
        DigitClassifier(side=30)


def test_table_stores_the_judge_once_and_verifies(tmp_path):
    kw = {"results_dir": tmp_path, "checkpoint_dir": tmp_path / "ck", "progress": False,
          "overrides": TINY}  # fmt: skip
    data = assembly.run_table("agreement", selection={"method": ["hste"]}, **kw)
    (rec,) = data["cells"]
    judge_store = assembly._judge_store(tmp_path)
    (judge_rec,) = judge_store.records()
    sha = judge_rec["provenance"]["artifacts"]["judge.pt"]["sha256"]
    assert rec["judge"]["sha256"] == sha and 0.5 < rec["judge"]["test_accuracy"] <= 1
    m = rec["metrics"]
    assert len(m["agreement_matrix"]) == 10 and m["n_test_digits"] == 20
    assert 0 <= m["agreement"] <= 1 and 0 <= m["prop_wrong"] <= 1
    stamp = judge_rec["provenance"]["timestamp"]
    assembly._JUDGES.clear()  # a new process: the judge is read back, not retrained
    assembly.run_table("agreement", selection={"method": ["gumbel_sinkhorn"]}, **kw)
    assert judge_store.records()[0]["provenance"]["timestamp"] == stamp
    check = assembly.EXPERIMENT.verify("agreement", rec["cell"], tmp_path)
    assert check["max_abs_diff"] == 0.0


def test_config_errors():
    with pytest.raises(ValueError, match="method"):
        AssemblyConfig(method="magic")
    with pytest.raises(ValueError, match="n_eval"):
        AssemblyConfig(n_eval=0)
