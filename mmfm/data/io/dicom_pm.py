"""An explanation (saliency) map as a DICOM Parametric Map (highdicom): float pixel values on the source images'
own geometry, in a new series of their study, referencing them.

The map is an mmfm array on the source's voxel grid, (I, J) or (I, J, K) as for a SEG (:mod:`mmfm.data.io.dicom_seg`:
frame k is ``map[:, :, k].T``), written as 32-bit Float Pixel Data (no quantisation) with a real-world value
mapping of identity (slope 1, intercept 0, unit UCUM '1': the saliency has no unit) labelled by the method.

Privacy: as for the SEG, only the patient and study identifiers the IOD requires are kept. Nothing is logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from mmfm.data.io.dicom_seg import _frames, _required_identifiers_only


def write_parametric_map(target: Path, values: np.ndarray, sources: Sequence[pydicom.Dataset], method: str,
                         algorithm: str, version: str, description: str = "mmfm explanation") -> pydicom.Dataset:
    """The float map ``values`` (the sources' grid) as a Parametric Map of ``sources`` written to ``target``;
    returns the dataset. ``method`` (e.g. ``rollout``, ``gradcam``, ``text``) labels its value mapping."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = _frames(np.nan_to_num(values), sources, np.float32)                  # (K, rows, cols)
    low, high = float(frames.min()), float(frames.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=method[:16] or "saliency", lut_explanation=f"{method} saliency"[:64], unit=codes.UCUM.NoUnits,
        value_range=(low, high if high > low else low + 1.0), slope=1.0, intercept=0.0)
    pm = hd.pm.ParametricMap(
        source_images=list(sources), pixel_array=frames, series_instance_uid=hd.UID(), series_number=902,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="mmfm", manufacturer_model_name=algorithm[:64],
        software_versions=version[:64], device_serial_number="none", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(                          # the whole range, LINEAR_EXACT:
            window_center=(low + high) / 2, window_width=max(high - low, 1e-6),     # a width below 1 is allowed
            voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT)],
        content_description=description[:64], content_label="MMFM_MAP", series_description=description[:64])
    _required_identifiers_only(pm)
    if "Laterality" not in pm:         # General Series Type 2C (dciodvfy asks for it): unknown, present and empty
        pm.Laterality = ""
    pm.save_as(target, enforce_file_format=True)
    return pm


def read_parametric_map(path: str | Path) -> np.ndarray:
    """The map back on mmfm's (I, J[, K]) grid from a file :func:`write_parametric_map` wrote (one frame: (I, J)):
    frames in slice-position order, as :func:`mmfm.data.io.dicom_seg.dicom_sources` orders the sources (highdicom
    may store them in another order)."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array                                                      # (K, rows, cols) or (rows, cols)
    frames = frames[None] if frames.ndim == 2 else frames
    cosines = np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
                         float)
    normal = np.cross(cosines[:3], cosines[3:])
    positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
                 for f in ds.PerFrameFunctionalGroupsSequence]
    frames = frames[np.argsort([float(normal @ p) for p in positions], kind="stable")]
    out = np.transpose(frames, (2, 1, 0)).astype(np.float32)
    return out[..., 0] if out.shape[2] == 1 else out
