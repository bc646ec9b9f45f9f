"""The label-only baseline of report generation against a hand computation."""

from __future__ import annotations

from mmfm.tasks.report_generation import label_majority_reports


def test_each_image_gets_the_most_frequent_training_caption_of_its_own_label():
    texts = ["big tumour", "small tumour", "small tumour", "brain top", "brain low", "brain low", "brain top"]
    labels = ["liver", "liver", "liver", "brain", "brain", "brain", "brain"]
    # liver: "small tumour" twice; brain: a tie (2 and 2) goes to the first in sorted order, "brain low"; an
    # unseen label gets the overall majority (a tie of three texts with 2: "brain low")
    assert label_majority_reports(texts, labels, ["liver", "brain", "eye"]) == \
        ["small tumour", "brain low", "brain low"]
