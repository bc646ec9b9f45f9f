"""Fixtures in the real on-disk formats a user brings: a mixed folder (DICOM file + series, NIfTI, MetaImage,
NRRD, PNG grey/RGB, a damaged file, non-image files) and a labelled folder with labels.csv."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image


def blob(shape: tuple[int, ...], cls: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy image whose bright square sits in a class-dependent corner (learnable from pixels)."""
    x = rng.normal(0, 0.3, shape).astype(np.float32)
    sl = tuple(slice(0, s // 2) if (cls >> d) & 1 == 0 else slice(s // 2, s) for d, s in enumerate(shape[:2]))
    x[sl] += 2.0
    return x


def write_dicom_series(src: str, folder: Path, n: int = 4, step: float = 2.5) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    series = pydicom.uid.generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(src)
        z0 = float(ds.ImagePositionPatient[2])
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z0 + k * step]
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"slice_{k}.dcm")


def write_mixed_folder(root: Path, dicom_src: str, seed: int = 0) -> dict[str, int]:
    """Every format in nested folders; returns how many images / volumes / damaged files it holds."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "ct" / "nifti").mkdir(parents=True)
    nib.save(nib.Nifti1Image(rng.normal(0, 100, (24, 20, 6)).astype(np.float32), np.diag([1.5, 1.5, 3, 1])),
             root / "ct" / "nifti" / "vol.nii.gz")
    (root / "mr").mkdir()
    vol = sitk.GetImageFromArray(rng.normal(0, 1, (5, 18, 22)).astype(np.float32))
    vol.SetSpacing((1.0, 1.0, 2.0))
    vol.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(vol, str(root / "mr" / "vol.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(0, 1, (16, 16)).astype(np.float32)),
                    str(root / "mr" / "slice.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(0, 1, (4, 12, 12)).astype(np.float32)),
                    str(root / "mr" / "detached.mhd"))
    (root / "xr" / "a" / "b").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (30, 26), dtype=np.uint8)).save(root / "xr" / "a" / "grey.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "xr" / "a" / "b" / "rgb.jpg")
    (root / "dicom").mkdir()
    pydicom.dcmread(dicom_src).save_as(root / "dicom" / "single.dcm")
    write_dicom_series(dicom_src, root / "dicom" / "series", n=4)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)    # truncated
    (root / "README.txt").write_text("notes")
    (root / "meta.json").write_text("{}")
    return {"images": 8, "volumes_slices": 6 + 5 + 4 + 4, "damaged": 1}


def write_labelled_folder(root: Path, n_per_class: int = 12, classes: int = 2, size: int = 24, seed: int = 0,
                          fmt: str = "png", dims: int = 2) -> Path:
    """``root/images/*.{png,nii.gz,mha}`` + ``labels.csv`` (image,label,patient)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,label,patient"]
    for c in range(classes):
        for i in range(n_per_class):
            shape = (size,) * dims
            x = blob(shape, c, rng)
            name = f"images/c{c}_{i}.{fmt}"
            if fmt == "png":
                Image.fromarray(np.clip(x * 60 + 60, 0, 255).astype(np.uint8)).save(root / name)
            elif fmt == "nii.gz":
                nib.save(nib.Nifti1Image(x, np.eye(4)), root / name)
            else:
                import SimpleITK as sitk

                sitk.WriteImage(sitk.GetImageFromArray(x), str(root / name))
            lines.append(f"{name},class{c},p{c}_{i}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def write_nifti_seg_folder(root: Path, n: int = 4, shape: tuple[int, int, int] = (28, 24, 18), seed: int = 0,
                           spacing: tuple[float, float, float] = (1.5, 1.5, 2.5)) -> Path:
    """``imagesTr/`` + ``labelsTr/`` (nnU-Net / MSD style): a bright ball (label 1) in noise, per case."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    for i in range(n):
        centre = np.array([rng.uniform(0.3, 0.7) * s for s in shape])
        ball = (((grid - centre[:, None, None, None]) ** 2).sum(0) < (min(shape) * 0.25) ** 2).astype(np.uint8)
        img = rng.normal(0, 20, shape) + 150 * ball
        aff = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(img.astype(np.float32), aff), root / "imagesTr" / f"case{i:02d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(ball, aff), root / "labelsTr" / f"case{i:02d}.nii.gz")
    return root


REPORTS = [("FINDINGS: The lungs are clear. No effusion. IMPRESSION: No acute disease.", 0),
           ("FINDINGS: Large right pleural effusion with basilar opacity. IMPRESSION: Right pleural effusion.", 1)]


def write_mimic_style_pairs(root: Path, n: int = 16, size: int = 32, seed: int = 0) -> Path:
    """MIMIC-CXR style: ``files/p<subject>/s<study>/<dicom_id>.png`` + ``captions.csv`` (image,text,patient,study);
    the effusion reports go with images whose bright block sits low (so image and text agree)."""
    rng = np.random.default_rng(seed)
    lines = ["image,text,patient,study"]
    for i in range(n):
        text, cls = REPORTS[i % 2]
        rel = f"files/p1{i:03d}/s5{i:03d}/img{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        x = blob((size, size), 2 * cls, rng)
        Image.fromarray(np.clip(x * 60 + 60, 0, 255).astype(np.uint8)).save(root / rel)
        lines.append(f'{rel},"{text}",p1{i:03d},s5{i:03d}')
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root


def write_iu_xray(root: Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """IU X-ray layout: ``ecgen-radiology/<n>.xml`` (report sections, MeSH, parentImage ids) + ``NLMCXR_png/``."""
    rng = np.random.default_rng(seed)
    (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
    (root / "NLMCXR_png").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text, cls = REPORTS[i % 2]
        findings, impression = (t.strip() for t in text.replace("FINDINGS:", "").split("IMPRESSION:"))
        img_id = f"CXR{i}_IM-0001-1001"
        (root / "ecgen-radiology" / f"{i}.xml").write_text(
            f'<?xml version="1.0"?><eCitation><uId id="CXR{i}"/><MedlineCitation><Article><Abstract>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article></MedlineCitation>'
            f'<MeSH><major>{"normal" if cls == 0 else "Pleural Effusion/right"}</major></MeSH>'
            f'<parentImage id="{img_id}"/></eCitation>')
        x = blob((size, size), 2 * cls, rng)
        Image.fromarray(np.clip(x * 60 + 60, 0, 255).astype(np.uint8)).save(root / "NLMCXR_png" / f"{img_id}.png")
    return root


def write_ct_rate_style(root: Path, n: int = 12, shape: tuple[int, int, int] = (20, 20, 12), seed: int = 0) -> Path:
    """CT-RATE style: ``dataset/train/<patient>/<study>/<volume>.nii.gz`` + ``captions.csv`` with the report
    sections as columns (VolumeName, Findings_EN, Impressions_EN)."""
    rng = np.random.default_rng(seed)
    lines = ["VolumeName,Findings_EN,Impressions_EN"]
    for i in range(n):
        text, cls = REPORTS[i % 2]
        findings, impression = (t.strip() for t in text.replace("FINDINGS:", "").split("IMPRESSION:"))
        rel = f"dataset/train/p{i}/s{i}/vol{i}.nii.gz"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        x = blob(shape, 2 * cls, rng) * 200 - 500            # Hounsfield-like values
        nib.save(nib.Nifti1Image(x.astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0])), root / rel)
        lines.append(f'{rel},"{findings}","{impression}"')
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root
