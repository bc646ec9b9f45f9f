"""Choosing an image's intensity preset at inference: one rule for every command and the app."""


def test_one_rule_chooses_the_inference_preset_and_says_why():
    from mmfm.data.presets import Preset, choose_preset, get_preset

    run = {"CT": "ct_lung", "MR": get_preset("mri_zscore").to_dict()}
    assert choose_preset("CT", "ct_bone", run, colour=True) == (get_preset("ct_bone"), "given")
    assert choose_preset("CT", None, run, colour=True) == (get_preset("ct_lung"), "the run's")
    assert choose_preset("MR", None, run)[0] == Preset.from_dict(get_preset("mri_zscore").to_dict())
    assert choose_preset("US", None, run, colour=True) == (get_preset("rgb_unit"), "colour image")
    assert choose_preset("CT") == (get_preset("ct_abdomen"), "default for CT")
    preset, why = choose_preset("unknown")
    assert preset == get_preset("percentile") and "--modality" in why
