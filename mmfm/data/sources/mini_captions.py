"""The generated captions of ``mini``: what each sample's masks and source say, not only its label.

Every sample gets two captions. ``caption_label`` is the label in words (one template per label, as mini v1
wrote), so a label-only baseline can be computed. ``caption`` adds what the masks and the volume allow: the slice
or crop position (thirds of the organ's extent along the slice axis), the lesion size from the tumour mask, the
tissue under a patch or the main tissue of a crop; its wording is one of several templates, chosen by a fixed hash
of the sample's identity (the same caption on every build and machine, so a rerun is comparable). The wording
never uses the zero-shot prompt templates (``mmfm.tasks.zero_shot.DEFAULT_TEMPLATES``).

Two facts of the sources shape the words: the LiTS volume's MRC header carries no voxel size (0), so lesion sizes
are in pixels and in bins, not in mm; and its slice axis is not known to be craniocaudal, so LiTS positions are
"first / middle / last third" of the liver along the slice axis. The brain volumes are RAS, so theirs are
"inferior / middle / superior third".
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

LITS_THIRDS = ("first third", "middle third", "last third")
BRAIN_THIRDS = ("inferior third", "middle third", "superior third")
# Tumour area on a 128 x 128 LiTS slice, in pixels: bins that split this case's range (about 200 to 1,800 pixels)
# into three, so the size word carries information here. Not a clinical size category (no voxel size is known).
TUMOUR_AREA_BINS = ((600, "small"), (1200, "medium"), (float("inf"), "large"))
# Share of a 32^3 crop's voxels that are tumour (the crop counts as a lesion crop above 1%).
CROP_TUMOUR_BINS = ((0.05, "small"), (0.15, "medium"), (float("inf"), "large"))


# The wordings of each kind of sample; {fields} are filled from its masks and source. One is chosen per sample.
WORDINGS = {
    "lits_slice": ("CT slice of the abdomen through the {position} of the liver, with {finding}.",
                   "Abdominal CT section in the {position} of the liver showing {finding}.",
                   "Contrast CT of the liver, {position}: {finding}."),
    "brain_slice": ("Axial T1-weighted MRI through the {position} of {who}.",
                    "T1 MRI, axial section in the {position} of {who}.",
                    "Brain MRI (T1-weighted), {position} of {who}, axial plane."),
    "patch": ("{word} patch centred on {tissue}{near}, from the {position} of the {organ}.",
              "Small {word} region of {tissue}{near} in the {position} of the {organ}.",
              "{Tissue}{near} seen in a {word} patch ({position} of the {organ})."),
    "lits_crop": ("CT sub-volume from the {position} of the liver, {liver}, with {finding}.",
                  "3D CT crop ({position} of the liver) holding {liver} and {finding}.",
                  "Abdominal CT cube, {position} of the liver: {liver}; {finding}."),
    "brain_crop": ("T1 MRI sub-volume from the {position} of the brain, mostly {tissue}.",
                   "3D T1 brain crop ({position}), mainly {tissue}.",
                   "Brain MRI cube in the {position}, where {tissue} dominates."),
}


def pick(key: str, options: Sequence[str]) -> str:
    """One of ``options``, fixed by the CRC-32 of ``key`` (Python's ``hash`` changes per process)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def worded(kind: str, key: str, **facts: str) -> str:
    """The caption of sample ``key``: one of ``WORDINGS[kind]`` (fixed by the key), filled with ``facts``."""
    return pick(key, WORDINGS[kind]).format(**facts)


def third(z: float, lo: float, hi: float, words: Sequence[str]) -> str:
    """The third of [lo, hi] that holds z (ends included)."""
    f = (z - lo) / max(hi - lo, 1e-9)
    return words[min(max(int(f * 3), 0), 2)]


def size_word(value: float, bins: Sequence[tuple[float, str]]) -> str:
    return next(w for upper, w in bins if value < upper)


def lits_slice(key: str, position: str, tumour_px: int) -> tuple[str, str]:
    """(caption, caption_label) of a LiTS slice; ``tumour_px`` tumour pixels (a lesion from 20)."""
    label = "Axial CT slice of the abdomen showing the liver" + (" with a tumour." if tumour_px >= 20 else ".")
    size, area = size_word(tumour_px, TUMOUR_AREA_BINS), f"{round(tumour_px, -1):.0f} pixels"
    finding = pick(key + ":t", (f"a {size} liver tumour (about {area})", f"a {size} tumour of about {area} in the "
                                "liver")) if tumour_px >= 20 else "no liver tumour"
    return worded("lits_slice", key, position=position, finding=finding), label


def brain_slice(key: str, position: str, template: bool) -> tuple[str, str]:
    """(caption, caption_label) of a T1 brain slice; ``template``: a population-average brain (MNI152)."""
    who = "a population-average template brain" if template else "a single subject's brain"
    return worded("brain_slice", key, position=position, who=who), "Axial T1-weighted MRI slice of the brain."


def patch(key: str, modality: str, tissue: str, organ: str, position: str, neighbour: str = "") -> tuple[str, str]:
    """(caption, caption_label) of a 32x32 patch centred on ``tissue`` (words) in ``organ``'s ``position``;
    ``neighbour``: another tissue that covers at least a fifth of the patch (words), or ""."""
    word = {"CT": "CT", "MR": "T1 MRI"}[modality]
    caption = worded("patch", key, word=word, tissue=tissue, Tissue=tissue[0].upper() + tissue[1:],
                     near=f" next to {neighbour}" if neighbour else "", position=position, organ=organ)
    return caption, f"{word} patch centred on {tissue}."


def lits_crop(key: str, position: str, tumour_fraction: float, liver_fraction: float) -> tuple[str, str]:
    """(caption, caption_label) of a 32^3 LiTS crop from its tumour and liver voxel shares."""
    lesion = tumour_fraction > 0.01
    liver = "mostly liver" if liver_fraction >= 0.5 else "the liver edge" if liver_fraction >= 0.1 else "little liver"
    finding = (f"a {size_word(tumour_fraction, CROP_TUMOUR_BINS)} tumour ({100 * tumour_fraction:.0f}% of the voxels)"
               if lesion else "no tumour")
    return (worded("lits_crop", key, position=position, liver=liver, finding=finding),
            "CT crop of the abdomen" + (" containing liver tumour." if lesion else " without tumour."))


def brain_crop(key: str, position: str, tissue: str) -> tuple[str, str]:
    """(caption, caption_label) of a 32^3 MNI152 crop whose most common tissue is ``tissue`` (words)."""
    return worded("brain_crop", key, position=position, tissue=tissue), "T1 MRI crop of the brain."
