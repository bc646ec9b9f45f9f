"""Canonical modality names, and the DICOM modality codes that map onto them."""

from __future__ import annotations

from mmfm.errors import UnknownNameError

# canonical name -> description
MODALITIES: dict[str, str] = {
    "CT": "computed tomography (Hounsfield units)",
    "MR": "magnetic resonance imaging",
    "XR": "projection radiography (CR, DX, DR)",
    "MG": "mammography",
    "US": "ultrasound",
    "PT": "positron emission tomography",
    "NM": "nuclear medicine",
    "fundus": "colour fundus photography",
    "OCT": "optical coherence tomography",
    "dermatoscopy": "dermatoscopy / clinical skin photography",
    "pathology": "histopathology (H&E, IHC) and microscopy",
    "seg": "a segmentation object (DICOM SEG)",
    "OT": "other (DICOM secondary capture and unlisted modalities)",
    "unknown": "not recorded by the file format (NIfTI, PNG, ...) and not given by the user",
}

_ALIASES = {
    "CR": "XR", "DX": "XR", "DR": "XR", "RG": "XR", "X-RAY": "XR", "XRAY": "XR", "MRI": "MR",
    "PET": "PT", "OP": "fundus", "XC": "dermatoscopy", "SM": "pathology", "GM": "pathology",
    "OPT": "OCT", "SEG": "seg", "SC": "OT", "OTHER": "OT", "ULTRASOUND": "US", "MAMMOGRAPHY": "MG",
}


def canonical_modality(name: str) -> str:
    """Return the canonical modality for a name or a DICOM Modality code; raise on unknown names.

    ``"<modality>:<channel>"`` (``MR:T1``, ``MR:FLAIR``, ``PT:SUV``) names one of several channels of a modality in
    a multi-modal sample; the part before ``:`` is canonicalised, the channel name kept as given."""
    if ":" in name:
        base, channel = name.split(":", 1)
        if not channel.strip():
            raise UnknownNameError("modality channel", name, ["MR:T1", "MR:T2", "MR:FLAIR"])
        return f"{canonical_modality(base)}:{channel.strip()}"
    if name in MODALITIES:
        return name
    key = name.strip().upper()
    for canon in MODALITIES:
        if canon.upper() == key:
            return canon
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownNameError("modality", name, list(MODALITIES) + list(_ALIASES))
