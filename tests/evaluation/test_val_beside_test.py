"""Validation scores recorded beside test (``record_val``), so a table can choose its best method on validation and
report that method's test score: the same numbers a validation-only evaluation gives, from the same probe head."""

from __future__ import annotations

from mmfm.workflows.config import DataConfig


def test_record_val_gives_the_validation_only_numbers_beside_test(mini_root, tmp_path):
    from mmfm.workflows.evaluate import evaluate_encoders

    data = dict(dataset="mini", set="patches2d", label="tissue")
    kw = dict(max_per_split=100, seeded_init=True)
    both = evaluate_encoders(["random:resnet_tiny"], ["linear", "knn"], DataConfig(**data), [0.1], [0, 1],
                             tmp_path / "both", record_val=True, **kw)
    val_only = evaluate_encoders(["random:resnet_tiny"], ["linear", "knn"], DataConfig(**data), [0.1], [0, 1],
                                 tmp_path / "val", score_split="val", **kw)
    test_only = evaluate_encoders(["random:resnet_tiny"], ["linear", "knn"], DataConfig(**data), [0.1], [0, 1],
                                  tmp_path / "test", **kw)
    key = lambda r: (r.task, r.method, r.metric, r.seed, r.label_fraction)  # noqa: E731
    got = {s: {key(r): r.value for r in both if r.split == s} for s in ("val", "test")}
    assert got["val"] == {key(r): r.value for r in val_only}
    assert got["test"] == {key(r): r.value for r in test_only}
    assert {r.task for r in both if r.split == "val"} == {"classification/linear", "classification/knn"}
    # the summary and the report stay on the test split
    summary = (tmp_path / "both" / "summary.json").read_text()
    assert summary == (tmp_path / "test" / "summary.json").read_text()


def test_at_all_labels_nothing_of_val_is_left_to_score(mini_root, tmp_path):
    """At 100% of the labels the head is chosen on every validation sample: the linear probe records test only
    (the quickstart's 1/10/100% comparison), and scoring on validation there is refused, not a crash."""
    import pytest

    from mmfm.errors import ConfigError
    from mmfm.workflows.evaluate import evaluate_encoders

    data = DataConfig(dataset="mini", set="patches2d", label="tissue")
    recs = evaluate_encoders(["random:resnet_tiny"], ["linear"], data, [0.1, 1.0], [0], tmp_path / "a",
                             record_val=True, max_per_split=40)
    assert {(r.split, r.label_fraction) for r in recs} == {("val", 0.1), ("test", 0.1), ("test", 1.0)}
    with pytest.raises(ConfigError, match="none is left to score on"):
        evaluate_encoders(["random:resnet_tiny"], ["linear"], data, [1.0], [0], tmp_path / "b", score_split="val",
                          max_per_split=40)
