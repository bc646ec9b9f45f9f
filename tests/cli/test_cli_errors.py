"""Every CLI path turns bad input into one message with a hint (exit status 2), never a raw traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmfm.cli.main import main
from mmfm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REPORT = ("FINDINGS: The heart is normal in size. The mediastinum is unremarkable. There is a small left pleural "
          "effusion with adjacent atelectasis. No pneumothorax. The lungs are otherwise clear. Degenerative changes "
          "of the thoracic spine. IMPRESSION: Small left pleural effusion. No acute osseous abnormality. Follow-up "
          "radiograph recommended in 6 weeks.")


def test_data_label_takes_a_long_report_as_text(capsys):
    assert len(REPORT.encode()) > 255
    assert main(["data", "label", REPORT]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert labels.get("effusion") == 1 and labels.get("pneumothorax") == 0


def test_data_label_reads_a_file(tmp_path, capsys):
    f = tmp_path / "r.txt"
    f.write_text("No pneumothorax. Cardiomegaly.")
    assert main(["data", "label", str(f)]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert labels["cardiomegaly"] == 1 and labels["pneumothorax"] == 0


@pytest.mark.parametrize("overrides, match", [
    (["encoder.name=vit_micro", "encoder.max_grid=4"], "exceeds the ViT's max_grid"),
    (["encoder.name=resnet_tiny", "encoder.widht=3"], "unknown option 'encoder.widht'"),
    (["train.precision=bf61"], "train.precision"),
    (["optim.lr=1e30"], "the loss became"),
])
def test_train_errors_are_one_line_with_a_hint(overrides, match, mini_root, tmp_path, capsys):
    cfg = ROOT / "configs" / "quickstart_classification.yaml"
    code = main(["train", str(cfg), *overrides, "train.max_steps=3", "train.progress=false", "train.workers=0",
                 f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "hint:" in err and "Traceback" not in err


def test_pretrain_mask_ratio_out_of_range(mini_root, tmp_path, capsys):
    code = main(["pretrain", str(ROOT / "configs" / "pretrain" / "mae_2d.yaml"), "objective.mask_ratio=1.2",
                 f"out={tmp_path}"])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_swin_side_not_a_multiple_of_32():
    from mmfm.encoders import build_encoder

    with pytest.raises(ConfigError, match="multiples of 32"):
        build_encoder("swin_tiny", spatial_dims=2, in_channels=1)(torch.zeros(1, 1, 48, 48))


def test_group_contrast_without_positive_pair_is_a_config_error():
    from mmfm.objectives.losses import MultiPositiveNCELoss

    with pytest.raises(ConfigError, match="positive partner"):
        MultiPositiveNCELoss(0.1, gather=False)(torch.randn(4, 8), torch.arange(4))


def test_an_unexpected_error_is_one_line_and_debuggable(monkeypatch, capsys):
    import mmfm.workflows.inspect as ins

    def boom(*a, **k):
        raise RuntimeError("something mmfm did not expect")

    monkeypatch.setattr(ins, "inspect_path", boom)
    assert main(["data", "inspect", "x.nii"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError" in err and "MMFM_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("MMFM_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["data", "inspect", "x.nii"])


def test_a_file_system_error_names_the_path(monkeypatch, capsys):
    import mmfm.workflows.inspect as ins

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/data/scan.nii")

    monkeypatch.setattr(ins, "inspect_path", denied)
    assert main(["data", "inspect", "x.nii"]) == 2
    err = capsys.readouterr().err
    assert "Permission denied: /data/scan.nii" in err and "hint:" in err and "Traceback" not in err
