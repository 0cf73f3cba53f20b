import json

import pytest

from permlib.experiments import relaxations, relaxations_search
from permlib.experiments.relaxations import TABLES, RelaxationsConfig, build, evaluate, train

TINY = RelaxationsConfig(task="multidigit", method="neuralsort", n=3, lr=1e-3,
                         lr_schedule="constant", batch_size=4, n_steps=4, n_test=8)  # fmt: skip


def test_train_split_draws_training_digits_from_its_own_stream():
    model = train(TINY, progress=False).model
    test, again = evaluate(model, TINY), evaluate(model, TINY)
    assert test == again  # deterministic
    seen = evaluate(model, TINY, split="train")
    assert set(seen) == set(test) and 0 <= seen["exact_match"] <= seen["elementwise"] <= 1
    with pytest.raises(ValueError, match="split"):
        evaluate(model, TINY, split="valid")
    with pytest.raises(ValueError, match="multidigit task only"):
        evaluate(model, RelaxationsConfig(n=3), split="train")


def test_curve_cell_tests_each_milestone_and_ends_like_a_plain_run():
    rec = relaxations_search.curve_cell(TINY, (2, 4), progress=False)
    assert [e["step"] for e in rec["curve"]] == [2, 4]
    assert all({"test", "train"} <= set(e) for e in rec["curve"])
    plain = relaxations.run_cell(TINY, progress=False)
    assert rec["metrics"] == plain["metrics"] == rec["curve"][-1]["test"]
    assert rec["train"]["final_loss"] == plain["train"]["final_loss"]


def test_curve_cell_resumes_after_a_crash(tmp_path, monkeypatch):
    straight = relaxations_search.curve_cell(TINY, (1, 2, 4), progress=False)
    ckpt = tmp_path / "cell.pt"
    calls = []
    real = relaxations_search.evaluate

    def crash_at_step_2(model, config, **kw):
        calls.append(kw.get("split", "test"))
        if len(calls) == 3:  # the first evaluation at the second milestone
            raise KeyboardInterrupt
        return real(model, config, **kw)

    monkeypatch.setattr(relaxations_search, "evaluate", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        relaxations_search.curve_cell(TINY, (1, 2, 4), checkpoint=ckpt, progress=False)
    side = tmp_path / "cell.pt.curve.json"
    assert [e["step"] for e in json.loads(side.read_text())["curve"]] == [1]
    monkeypatch.setattr(relaxations_search, "evaluate", real)
    resumed = relaxations_search.curve_cell(TINY, (1, 2, 4), checkpoint=ckpt, progress=False)
    strip = [{k: e[k] for k in ("step", "test", "train")} for e in straight["curve"]]
    assert [{k: e[k] for k in ("step", "test", "train")} for e in resumed["curve"]] == strip
    assert not side.exists()


def test_a_corrupt_curve_file_is_named(tmp_path):
    ckpt = tmp_path / "cell.pt"
    (tmp_path / "cell.pt.curve.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="cell.pt.curve.json"):
        relaxations_search.curve_cell(TINY, (2, 4), checkpoint=ckpt, progress=False)


def test_milestones_and_names_are_checked():
    with pytest.raises(ValueError, match="increasing"):
        relaxations_search.curve_cell(TINY, (4, 2), progress=False)
    with pytest.raises(ValueError, match="n_steps"):
        relaxations_search.curve_cell(TINY, (1, 2), progress=False)
    with pytest.raises(ValueError, match="milestones"):
        relaxations_search.cells(milestones=())
    with pytest.raises(ValueError, match="variants"):
        relaxations_search.cells(variants=["magic"])
    with pytest.raises(ValueError, match="methods"):
        relaxations_search.cells(methods=["magic"])
    (cell, config), *_ = relaxations_search.cells(milestones=(10, 20))
    assert config.n_steps == 20 and cell["seed"] not in (0, 1, 2)


def test_search_grid_records_curves_with_provenance(tmp_path):
    data = relaxations_search.run(
        (3,), ("neuralsort",), (100,), ["baseline"], (1, 2),
        overrides={"batch_size": 4, "n_test": 8}, results_dir=tmp_path,
        checkpoint_dir=tmp_path / "ck", progress=False,
    )  # fmt: skip
    (rec,) = data["cells"]
    assert rec["provenance"]["mode"] == "search" and "model.pt" in str(rec["provenance"])
    table = relaxations_search.curves(data)
    assert len(table) == 4 and set(table.split) == {"test", "train"}
    assert rec["config"]["n_test"] == 8 and rec["config"]["n_steps"] == 2


def test_augment_shift_is_checked_and_left_out_of_old_identities():
    assert "augment_shift" not in TINY.to_dict()
    shifted = RelaxationsConfig(**{**TINY.__dict__, "augment_shift": 2})
    assert shifted.to_dict()["augment_shift"] == 2
    with pytest.raises(ValueError, match="augment_shift"):
        RelaxationsConfig(task="multidigit", augment_shift=-1)
    with pytest.raises(ValueError, match="multidigit task only"):
        RelaxationsConfig(augment_shift=1)
    # the shift changes training, not the test lists
    a, b = train(TINY, progress=False), train(shifted, progress=False)
    assert a.losses != b.losses
    (_, config), *_ = relaxations_search.cells(variants=["shift_2"], milestones=(4,))
    assert config.augment_shift == 2


def test_cnn_chunk_is_checked_and_the_search_keeps_whole_batches():
    assert "cnn_chunk" not in TINY.to_dict()
    chunked = RelaxationsConfig(**{**TINY.__dict__, "cnn_chunk": 7})
    assert chunked.to_dict()["cnn_chunk"] == 7
    assert build(chunked).cnn.chunk == 7 and build(TINY).cnn.chunk is None
    with pytest.raises(ValueError, match="cnn_chunk"):
        RelaxationsConfig(task="multidigit", cnn_chunk=-1)
    with pytest.raises(ValueError, match="multidigit task only"):
        RelaxationsConfig(cnn_chunk=32)
    # the table chunks the CNN; the protocol search keeps the whole batches it was recorded with
    assert TABLES["multidigit"]["protocol"]["cnn_chunk"] == 32
    (_, config), *_ = relaxations_search.cells(milestones=(4,))
    assert config.cnn_chunk == 0 and "cnn_chunk" not in config.to_dict()
