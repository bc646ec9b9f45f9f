"""The rule-based labeller on positive, negated and uncertain sentences, and the MeSH mapping."""

from __future__ import annotations

import numpy as np
import pytest

from mmfm.data.labeller import LABELS, label_matrix, label_report, mesh_matrix


@pytest.mark.parametrize("text,label,value", [
    ("There is cardiomegaly.", "cardiomegaly", 1),
    ("The heart is enlarged.", "cardiomegaly", 1),
    ("Heart size is normal.", "cardiomegaly", 0),
    ("No pleural effusion.", "effusion", 0),
    ("No pneumothorax, pleural effusion, or focal consolidation.", "consolidation", 0),
    ("There is no evidence of pneumothorax.", "pneumothorax", 0),
    ("Pneumothorax is not seen.", "pneumothorax", 0),
    ("Possible small left effusion.", "effusion", -1),
    ("Opacity may represent atelectasis.", "atelectasis", -1),
    ("Pneumonia cannot be excluded.", "pneumonia", -1),
    ("No effusion but there is a right lower lobe opacity.", "opacity", 1),
    ("No effusion but there is a right lower lobe opacity.", "effusion", 0),
    ("Calcified granuloma in the right upper lobe.", "granuloma", 1),
    ("Calcified granuloma in the right upper lobe.", "calcification", None),
    ("Mild dextroscoliosis of the thoracic spine.", "scoliosis", 1),
])
def test_sentence_labels(text, label, value):
    assert label_report(text).get(label) == value


def test_normal_only_when_nothing_abnormal():
    assert label_report("No acute cardiopulmonary abnormality. Lungs are clear.")["normal"] == 1
    assert label_report("Heart size normal. No effusion.")["normal"] == 1
    assert label_report("Cardiomegaly. Lungs are clear.")["normal"] == 0
    assert label_report("Possible effusion.")["normal"] == 0
    assert label_report("") == {}


def test_positive_mention_wins_across_sentences():
    assert label_report("No effusion on the left. Small right effusion.")["effusion"] == 1


def test_label_matrix_uncertainty_policy():
    texts = ["Possible effusion.", "Effusion.", "No effusion."]
    j = LABELS.index("effusion")
    assert label_matrix(texts)[:, j].tolist() == [1, 1, 0]
    assert label_matrix(texts, uncertain=0)[:, j].tolist() == [0, 1, 0]


def test_mesh_matrix_maps_headings_and_qualifiers():
    m = mesh_matrix([["Cardiomegaly/mild", "Lung/hypoinflation/bilateral"], ["normal"], ["Lung/hyperdistention"],
                     ["Aorta/tortuous"], ["Aorta/atherosclerotic"]])
    get = {k: m[:, LABELS.index(k)].tolist() for k in ("cardiomegaly", "hypoinflation", "normal", "hyperinflation",
                                                       "tortuous_aorta")}
    assert get["cardiomegaly"] == [1, 0, 0, 0, 0]
    assert get["hypoinflation"] == [1, 0, 0, 0, 0]
    assert get["normal"] == [0, 1, 0, 0, 0]
    assert get["hyperinflation"] == [0, 0, 1, 0, 0]
    assert get["tortuous_aorta"] == [0, 0, 0, 1, 0]
    assert m.dtype == np.int64
