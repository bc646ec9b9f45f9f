"""Label maps (segmentation masks) in any format mmfm reads, and how a mask is put on its image's grid.

A mask is an image whose voxels are class indices: read like any image (NIfTI, MetaImage, NRRD, a DICOM file or
series folder, PNG), then checked to be one channel of non-negative integers. Its grid is compared with its
image's from the headers alone (:func:`header_grid`, no voxels decoded) so a training run can check every case
before its first step; :func:`place_mask` then puts the voxels on the image grid: kept as they are on the same
grid, resampled nearest-neighbour through both affines (world millimetres) on another one, refused when the two
grids do not overlap in space or differ in dimensionality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfm.data.sample import Image
from mmfm.errors import InputFileError

AFFINE_TOL_MM = 1e-3        # two headers that agree to a micrometre describe one grid


def read_label_map(path: str | Path) -> Image:
    """A mask as an :class:`Image` whose array is ``(1, *spatial)`` int64 class indices (affine kept)."""
    from mmfm.data.io import read_image

    img = read_image(path, voi_lut=False)      # raw stored values: no window applied to a DICOM mask
    arr = img.array
    if arr.shape[0] != 1:
        raise InputFileError(path, f"a mask must have one channel, this one has {arr.shape[0]}",
                             "save the label map as one integer channel (0 = background, 1..K = classes)")
    labels = np.rint(arr)
    if not np.allclose(arr, labels, atol=1e-3) or (labels.size and labels.min() < 0):
        raise InputFileError(path, "is not a label map: its values are not non-negative integers",
                             "a mask holds class indices (0 = background, 1..K); check that image and mask were "
                             "not swapped")
    return Image(labels.astype(np.int64), "seg", img.affine, img.meta)


def header_grid(path: str | Path, series_uid: str | None = None) -> tuple[tuple[int, ...], np.ndarray]:
    """(spatial shape, 4x4 RAS affine) of an image from its header where the format allows it (NIfTI, MetaImage,
    NRRD), else from reading it; the same shape and affine the readers give."""
    from mmfm.data.io import image_format, read_image

    p = Path(path)
    fmt = image_format(p)
    if fmt == "nifti":
        import nibabel as nib

        from mmfm.data.io.nifti import check_nifti_header

        try:
            nii = nib.load(str(p))
        except Exception as e:  # nibabel raises many types on damaged headers
            raise InputFileError(p, f"cannot read as NIfTI ({type(e).__name__})", "the file is damaged") from None
        check_nifti_header(p, nii)
        shape = tuple(int(s) for s in nii.header.get_data_shape()[:3])
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        return shape, np.asarray(nii.affine, np.float64)
    if fmt in ("metaimage", "nrrd"):
        from mmfm.data.io.itk import LPS_TO_RAS, _header, read_itk_header

        read_itk_header(p)
        reader = _header(p)
        nd = len(reader.GetSize())
        lps = np.eye(4)
        lps[:nd, :nd] = np.asarray(reader.GetDirection(), np.float64).reshape(nd, nd) * \
            np.asarray(reader.GetSpacing(), np.float64)[None, :]
        lps[:nd, 3] = reader.GetOrigin()
        return tuple(int(s) for s in reader.GetSize()), LPS_TO_RAS @ lps
    if fmt == "dicom-series":
        from mmfm.data.io.dicom import read_dicom_series

        img = read_dicom_series(p, series_uid=series_uid)
    else:
        img = read_image(p, voi_lut=False)
    return tuple(img.spatial_shape), np.asarray(img.affine, np.float64)


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The 2**nd corner voxel centres of a grid, homogeneous (4, 2**nd)."""
    nd = len(shape)
    idx = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(nd, -1)
    out = np.zeros((4, idx.shape[1]))
    out[:nd], out[3] = idx, 1.0
    return out


def grid_relation(image: tuple[tuple[int, ...], np.ndarray], mask: tuple[tuple[int, ...], np.ndarray]) -> str:
    """How a mask's grid stands to its image's: ``same``, ``other`` (another grid overlapping the image in
    space: resampled), ``apart`` (no overlap in space) or ``dims`` (2D against 3D)."""
    (ishape, iaff), (mshape, maff) = image, mask
    if len(ishape) != len(mshape):
        return "dims"
    if tuple(ishape) == tuple(mshape) and np.allclose(iaff, maff, atol=AFFINE_TOL_MM):
        return "same"
    # the mask's box in the image's voxel indices, against the image's own box
    box = (np.linalg.inv(iaff) @ maff @ _corners(mshape))[:len(ishape)]
    lo, hi = box.min(1), box.max(1)
    inside = all(lo[d] < ishape[d] - 0.5 and hi[d] > -0.5 for d in range(len(ishape)))
    return "other" if inside else "apart"


def place_mask(mask: Image, image: Image, where: str | Path) -> tuple[np.ndarray, str]:
    """(mask voxels on the image's grid ``(1, *image.spatial_shape)`` int64, how: ``same`` or ``resampled``).
    Raises :class:`InputFileError` naming ``where`` when the grids differ in dimensionality, do not overlap in
    space, or the resampled mask loses every labelled voxel it had."""
    ishape, mshape = tuple(image.spatial_shape), tuple(mask.spatial_shape)
    rel = grid_relation((ishape, image.affine), (mshape, mask.affine))
    if rel == "same":
        return mask.array, "same"
    if rel == "dims":
        raise InputFileError(where, f"the mask is {len(mshape)}D {list(mshape)} but its image is {len(ishape)}D "
                                    f"{list(ishape)}", "give a mask on the image's grid (same shape and header)")
    if rel == "apart":
        raise InputFileError(where, f"the mask (shape {list(mshape)}) lies outside its image (shape {list(ishape)}) "
                                    "in space: their headers place them apart",
                             "write the mask with its image's header (origin, spacing, direction), e.g. the "
                             "segmentation tool's export on the image")
    # nearest neighbour through world millimetres: image index -> RAS -> mask index. scipy's affine_transform with
    # order=0 keeps class indices exact (MONAI's SpatialResample does the same via float grid_sample)
    from scipy.ndimage import affine_transform

    nd = len(ishape)
    m = (np.linalg.inv(mask.affine) @ image.affine)
    out = affine_transform(mask.array[0], m[:nd, :nd], offset=m[:nd, 3], output_shape=ishape, order=0,
                           mode="constant", cval=0)
    if mask.array.any() and not out.any():
        raise InputFileError(where, "the mask's labelled voxels all fall outside its image after resampling onto "
                                    "the image grid", "write the mask with its image's header (origin, spacing, "
                                                      "direction)")
    return out[None].astype(np.int64), "resampled"
