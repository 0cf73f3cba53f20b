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


def test_pixel_assembly_is_the_exact_matching():
    """The sort equals the Hungarian optimum of the rank-one score and only moves pixels."""
    from permlib import matching

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 4, generator=g, dtype=torch.float64)
    images[0, 0, :2] = images[0, 1, 1]  # ties
    templates = torch.rand(6, 3, 4, generator=g, dtype=torch.float64)
    out = assembly.pixel_assembly(images, templates)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out.flatten(1).sort().values, images.flatten(1).sort().values)
    x, t = images.flatten(1), templates.flatten(1)
    perm = matching(x[:, :, None] * t[:, None, :])  # item i -> position perm[i]
    best = (x * t.gather(1, perm)).sum(1)
    torch.testing.assert_close((out.flatten(1) * t).sum(1), best)
    # a template broadcast over a batch, and an empty batch
    one = assembly.pixel_assembly(images, templates[0])
    torch.testing.assert_close(one[2], assembly.pixel_assembly(images[2], templates[0]))
    assert assembly.pixel_assembly(images[:0], templates[0]).shape == (0, 3, 4)


def test_pixel_assembly_errors():
    with pytest.raises(ValueError, match="images"):
        assembly.pixel_assembly(torch.ones(3, 3, dtype=torch.long), torch.ones(3, 3))
    with pytest.raises(ValueError, match="templates"):
        assembly.pixel_assembly(torch.ones(3, 3), torch.ones(3))
    with pytest.raises(ValueError, match=r"same \(H, W\)"):
        assembly.pixel_assembly(torch.ones(2, 3, 3), torch.ones(3, 4))


def test_pixel_limit_agreement_with_a_stand_in_judge():
    """A judge that reads the class whose template an image matches best agrees everywhere."""
    config = AssemblyConfig(n_eval=3)
    templates = assembly.class_templates(config)
    assert templates.shape == (10, 28, 28)

    class Nearest(DigitClassifier):
        def predict(self, x):
            flat = x.flatten(1)
            t = templates.flatten(1)
            t = (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True)
            return (flat @ t.T).argmax(1)

    judged = assembly.pixel_limit(Nearest(), config)
    assert judged["n_test_digits"] == 30
    m = torch.tensor(judged["agreement_matrix"])
    assert m.shape == (10, 10) and ((m >= 0) & (m <= 1)).all()
    assert judged["agreement"] == pytest.approx(float(m[~torch.eye(10, dtype=bool)].mean()))
    assert judged["agreement"] > 0.5
