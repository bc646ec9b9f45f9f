"""Unpacking what `mmfm serve` is sent, within limits, before any reader sees it.

An upload is untrusted: a zip is checked for its member count and unpacked size (declared, then counted while
writing, since the declared size may lie) before anything lands on disk; names that would leave the upload folder
are skipped; macOS resource forks, ``.DS_Store`` and other hidden files are not written. A MetaImage/NRRD header
whose voxels sit in a separate file is read only when that file came in the same zip (the reader confines it to the
header's own folder, inside the upload)."""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from mmfm.errors import ConfigError


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on one upload: bytes sent, bytes and files unpacked from a zip, pixels of a 2D image and voxels of a
    volume as its header declares them (checked before decoding)."""

    max_bytes: int = 512 << 20
    max_unpacked_bytes: int = 512 << 20
    max_members: int = 10_000
    max_pixels_2d: int = 1 << 25        # 33.5 M pixels: larger than any radiograph or mammogram (~24 M)
    max_voxels_3d: int = 1 << 28        # 268 M voxels: a 512 x 512 x 1024 CT; 1 GiB as float32
    # and at most this many pixels or voxels per byte uploaded, above a floor: scans compress a few times, so a
    # 600 KB file that declares 600 slices of 512 x 512 (deflate holds that) is a bomb, not a scan
    max_expansion: int = 100
    expansion_floor: int = 1 << 24      # 16.7 M: any image up to this size, however well it compresses

    def budget(self, upload_bytes: int) -> tuple[int, int]:
        """(2D pixels, 3D voxels) an upload of ``upload_bytes`` may declare."""
        cap = max(self.expansion_floor, self.max_expansion * upload_bytes)
        return min(self.max_pixels_2d, cap), min(self.max_voxels_3d, cap)


def image_suffix(name: str, head: bytes = b"") -> str:
    """The suffix an upload is stored under: its name's, for a format mmfm reads (the registry in
    :mod:`mmfm.data.io.formats`) or a zip; else, from its first bytes (a DICOM file exported as ``IM0001``), the
    suffix of the format they show; "" when neither says."""
    from mmfm.data.io.formats import readable_suffixes, suffix_for

    low = name.lower()
    return next((s for s in (*readable_suffixes(), ".zip") if low.endswith(s)), "") or (suffix_for(head) or "")


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(name).parts)


def unpack_zip(data: bytes, dest: Path, limits: UploadLimits) -> None:
    """Unpack ``data`` into ``dest`` (folders, hidden files and names that would escape are skipped)."""
    hint = "zip only the image (a DICOM series folder, or a .mhd/.nhdr header with its data file)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [m for m in z.infolist() if not m.is_dir() and not _hidden(m.filename)]
            if len(members) > limits.max_members:
                raise ConfigError(f"the .zip holds {len(members):,} files, over the limit of {limits.max_members:,}",
                                  hint)
            declared = sum(m.file_size for m in members)
            if declared > limits.max_unpacked_bytes:
                raise ConfigError(f"the .zip would unpack to {declared / 1e6:,.0f} MB, over the limit of "
                                  f"{limits.max_unpacked_bytes / 1e6:,.0f} MB", hint)
            root = dest.resolve()
            written = 0
            for m in members:
                target = (dest / m.filename).resolve()
                if root not in target.parents:
                    continue                                       # a name that would escape the folder
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:      # a member that declared less than it holds
                            raise ConfigError("the .zip would unpack to more than the limit of "
                                              f"{limits.max_unpacked_bytes / 1e6:,.0f} MB", hint)
                        out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
        raise ConfigError("the .zip file is damaged, encrypted or uses an unsupported compression",
                          "zip the folder again (plain deflate, no password)") from None


def image_in_folder(folder: Path) -> Path:
    """The image an unpacked zip holds: the folder itself for a DICOM series (other files beside the slices, such as
    a README, are ignored), else its one image file (a header's data file is not an image of its own)."""
    from mmfm.data.io.dicom import is_dicom

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.stat().st_size > 0]
    if any(is_dicom(p) for p in files):
        return folder
    images = [p for p in files if image_suffix(p.name) and image_suffix(p.name) != ".zip"]
    if len(images) == 1:
        return images[0]
    if not images:
        raise ConfigError("the .zip holds no image mmfm reads here",
                          "zip a DICOM series folder, or a .mhd/.nhdr header with its data file")
    raise ConfigError(f"the .zip holds {len(images)} images", "upload one image (or one DICOM series) at a time")


def refuse_detached(path: Path) -> None:
    """A lone MetaImage/NRRD header whose voxels are in another file: that file did not come with the upload."""
    from mmfm.data.io.itk import ITK_SUFFIXES, read_itk_header

    if path.suffix.lower() in ITK_SUFFIXES and read_itk_header(path).data_files:
        raise ConfigError("this header keeps its voxels in a separate data file, which was not uploaded",
                          "upload the header and its data file together in one .zip")
