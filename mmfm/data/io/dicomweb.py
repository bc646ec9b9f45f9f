"""DICOMweb: find (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS) DICOM instances on a PACS, by URL.

A URL names the service root and, optionally, a study or one of its series::

    dicomweb+http(s)://HOST[:PORT]/PATH                                    the service (a sink: push, --out)
    dicomweb+http(s)://HOST[:PORT]/PATH/studies/<StudyUID>                 a study
    dicomweb+http(s)://HOST[:PORT]/PATH/studies/<StudyUID>/series/<UID>    a series (an IMAGE)

Anything else (user:password@ in the URL, a query string, instances, a UID that is not a UID) is refused with one
line. The protocol is spoken by ``dicomweb-client`` over a ``requests`` session that mmfm configures here, in one
place: TLS certificates verified (``REQUESTS_CA_BUNDLE`` names a private CA), bounded timeouts (connect 5 s,
read 60 s), bounded retries (three attempts in all, 400 ms and 800 ms apart, after a connection failure or a
408/429/503/504 answer), and a byte limit on every response, checked as it streams in, before anything is decoded.

Credentials, in this order: ``MMFM_DICOMWEB_TOKEN`` (a bearer token), ``MMFM_DICOMWEB_USER`` with
``MMFM_DICOMWEB_PASSWORD`` (basic auth), or the netrc file (``$NETRC`` or ``~/.netrc``) entry of the host. They
are never logged, written, or put in an error message; requests drops them on a redirect to another host.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mmfm.errors import ConfigError, MMFMError

SCHEMES = ("dicomweb+http://", "dicomweb+https://")
TIMEOUT = (5.0, 60.0)                       # seconds: (connect, read) of every request
MAX_BYTES = 4 * 1024**3                     # one response (a series, a query's answer): 4 GiB
MAX_INSTANCES = 10_000                      # instances in one series
MAX_SERIES = 1_000                          # series one query may select
STOW_BATCH = 16                             # instances per STOW-RS request
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NOT_IMAGES = {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "KO", "PR", "DOC", "REG", "FID", "AU", "ECG",
               "HD", "PLAN", "RWV", "OT-SR"}


class DicomwebError(MMFMError):
    """A DICOMweb server that cannot be reached, refuses the credentials, or lacks what was asked for."""


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class DicomwebURL:
    """A parsed ``dicomweb+http(s)://`` URL: the service root (``http(s)://host:port/path``), a study, a series."""

    service: str
    study: str | None = None
    series: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.service).netloc

    def __str__(self) -> str:
        tail = (f"/studies/{self.study}" if self.study else "") + (f"/series/{self.series}" if self.series else "")
        return f"dicomweb+{self.service}{tail}"


def is_dicomweb(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` is a DICOMweb URL (rather than a local path)."""
    return str(text).lower().startswith(SCHEMES)


def _check_uid(uid: str, what: str, text: str) -> str:
    if not (0 < len(uid) <= 64 and _UID.match(uid)):
        raise ConfigError(f"{text}: '{uid[:70]}' is not a {what} UID", "a UID is digits and dots, at most 64")
    return uid


def parse_url(text: str) -> DicomwebURL:
    """The service, study and series of ``text``, or a ConfigError that says what is wrong with it."""
    hint = ("write dicomweb+http(s)://HOST[:PORT]/PATH[/studies/<StudyUID>[/series/<SeriesUID>]]")
    if not is_dicomweb(text):
        raise ConfigError(f"{text}: not a DICOMweb URL", hint)
    parts = urlsplit(text[len("dicomweb+"):])
    if parts.username is not None or parts.password is not None:
        raise ConfigError("a DICOMweb URL with credentials in it (they would end up in shell history and logs)",
                          "give them as MMFM_DICOMWEB_TOKEN, MMFM_DICOMWEB_USER / MMFM_DICOMWEB_PASSWORD or netrc")
    shown = f"dicomweb+{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.query or parts.fragment:
        raise ConfigError(f"{shown}: a DICOMweb URL takes no query string or fragment",
                          "give a query as --query KEY=VALUE")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{shown}: the port is not a number from 0 to 65535", hint) from None
    if not parts.hostname:
        raise ConfigError(f"{shown}: no host", hint)
    segments = [s for s in parts.path.split("/") if s]
    study = series = None
    if "studies" in segments:
        at = len(segments) - 1 - segments[::-1].index("studies")
        tail, segments = segments[at:], segments[:at]
        if len(tail) not in (2, 4) or (len(tail) == 4 and tail[2] != "series"):
            raise ConfigError(f"{shown}: after /studies/ comes a study UID and optionally /series/<UID>, nothing "
                              "else (instances and frames are not addressed)", hint)
        study = _check_uid(tail[1], "study", shown)
        series = _check_uid(tail[3], "series", shown) if len(tail) == 4 else None
    elif "series" in segments or "instances" in segments:
        raise ConfigError(f"{shown}: a series is addressed inside its study", hint)
    service = f"{parts.scheme}://{parts.netloc}" + "".join(f"/{s}" for s in segments)
    return DicomwebURL(service, study, series)


def credentials(host: str) -> Any:
    """The requests auth for ``host`` from the environment or netrc (None without any)."""
    import requests

    token = os.environ.get("MMFM_DICOMWEB_TOKEN")
    user, password = os.environ.get("MMFM_DICOMWEB_USER"), os.environ.get("MMFM_DICOMWEB_PASSWORD")
    if token and user:
        raise ConfigError("both MMFM_DICOMWEB_TOKEN and MMFM_DICOMWEB_USER are set", "keep one of them")
    if token:
        return _Bearer(token)
    if user or password:
        if not (user and password is not None):
            raise ConfigError("MMFM_DICOMWEB_USER and MMFM_DICOMWEB_PASSWORD are set together or not at all",
                              "set the missing one")
        return requests.auth.HTTPBasicAuth(user, password)
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if path.is_file():
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            raise ConfigError(f"{path}: not a readable netrc file", "fix it, or set NETRC to another") from None
        if entry and entry[0]:
            return requests.auth.HTTPBasicAuth(entry[0], entry[2] or "")
    return None


class _Bearer:
    """``Authorization: Bearer <token>`` on each request (requests removes it on a redirect to another host)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: Any) -> Any:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "_Bearer(<hidden>)"


def _capped(max_bytes: int) -> Any:
    """A response hook that refuses a body over ``max_bytes``: by its Content-Length when it says, else while it
    streams in (``iter_content`` is what requests and dicomweb-client read every body through)."""

    def hook(r: Any, *args: Any, **kwargs: Any) -> Any:
        length = r.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            r.close()
            raise _TooLarge(int(length))
        read = r.iter_content

        def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
            seen = 0
            for chunk in read(chunk_size, decode_unicode):
                seen += len(chunk)
                if seen > max_bytes:
                    r.close()
                    raise _TooLarge(seen)
                yield chunk

        r.iter_content = iter_content
        return r

    return hook


def _session(hostname: str, max_bytes: int) -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    s = requests.Session()
    s.auth = credentials(hostname)
    s.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
    retry = Retry(total=None, connect=0, read=False, status=0, other=0, redirect=3)   # dicomweb-client retries
    for prefix in ("http://", "https://"):
        s.mount(prefix, HTTPAdapter(max_retries=retry))
    s.hooks["response"].append(_capped(max_bytes))
    return s


class DicomwebClient:
    """QIDO-RS, WADO-RS and STOW-RS on one service, every failure a one-line :class:`DicomwebError`."""

    def __init__(self, url: DicomwebURL, max_bytes: int = MAX_BYTES, timeout: tuple[float, float] = TIMEOUT) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url, self.max_bytes, self.timeout = url, max_bytes, timeout
        session = _session(urlsplit(url.service).hostname or "", max_bytes)
        self._client = DICOMwebClient(url.service, session=session, timeout=timeout)
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)

    @contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        """Translate what requests and dicomweb-client raise into one line naming the host, never the secrets."""
        import requests
        from pydicom.errors import InvalidDicomError

        host = self.url.host
        try:
            yield
        except requests.exceptions.SSLError:
            raise DicomwebError(f"{host}: its TLS certificate could not be verified",
                                "use https with a valid certificate; REQUESTS_CA_BUNDLE names a private CA") from None
        except requests.exceptions.Timeout:
            raise DicomwebError(f"{host} did not answer within {self.timeout[0]:g} s (connect) / "
                                f"{self.timeout[1]:g} s (read)", "check the host, port and network") from None
        except requests.exceptions.ConnectionError:
            raise DicomwebError(f"cannot reach the DICOMweb server at {host}",
                                "check the host and port, and that the server is running") from None
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            if status == 401:
                raise DicomwebError(f"{host} refused the credentials (HTTP 401)",
                                    "set MMFM_DICOMWEB_TOKEN, or MMFM_DICOMWEB_USER and MMFM_DICOMWEB_PASSWORD, or "
                                    "a netrc entry for the host") from None
            if status == 403:
                raise DicomwebError(f"{host} denied access to {what} (HTTP 403)",
                                    "ask the PACS administrator for access") from None
            if status == 404:
                raise DicomwebError(f"{what} not found on {host} (HTTP 404)", "check the UIDs and the path") from None
            raise DicomwebError(f"{host} answered HTTP {status} to {what}", "try again, or ask its administrator") \
                from None
        except _TooLarge:
            raise DicomwebError(f"{what} on {host} is larger than the limit of {self.max_bytes / 1e6:g} MB",
                                "retrieve less at a time (one series, a narrower query)") from None
        except (ValueError, KeyError, InvalidDicomError):   # dicomweb-client on an answer that is not DICOMweb
            raise DicomwebError(f"{host} answered {what} with something that is not DICOMweb",
                                "check the service path (Orthanc: /dicom-web)") from None

    def search_series(self, study: str | None = None, query: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS: the series (DICOM JSON) of ``study`` (or of every study) that match ``query``."""
        filters = dict(query or {})
        with self._answers("a series search"):
            found = self._client.search_for_series(study_instance_uid=study, search_filters=filters,
                                                   fields=["NumberOfSeriesRelatedInstances"], limit=MAX_SERIES + 1)
        if len(found) > MAX_SERIES:
            raise DicomwebError(f"the query selects more than {MAX_SERIES} series", "narrow it with --query")
        return found

    def series_of(self, url: DicomwebURL, query: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """(study, series) UIDs named by ``url`` (a series, a study, or the service with ``query``)."""
        if url.study is None and not query:
            raise ConfigError(f"{url} names no study", "add /studies/<StudyUID>[/series/<UID>], or --query KEY=VALUE")
        filters = {**(query or {}), **({"SeriesInstanceUID": url.series} if url.series else {})}
        found = [(_value(s, "0020000D"), _value(s, "0020000E")) for s in self.search_series(url.study, filters)]
        if not found:
            what = (f"series {url.series} in study {url.study}" if url.series else
                    f"study {url.study}" if url.study else "a series that matches the query")
            raise DicomwebError(f"{what} not found on {url.host}", "check the UIDs (or the query)")
        return found

    def check_image_series(self, study: str, series: str) -> None:
        """Refuse a series that holds no images (a report, a segmentation, a presentation state)."""
        found = self.search_series(study, {"SeriesInstanceUID": series})
        modality = _value(found[0], "00080060") if found else ""
        if modality in _NOT_IMAGES:
            raise DicomwebError(f"series {series} is not an image (Modality {modality})",
                                "give the URL of an image series of the study")

    def retrieve_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """WADO-RS: every instance of the series as ``folder/<SOPInstanceUID>.dcm`` (the folder is created)."""
        found = self.search_series(study, {"SeriesInstanceUID": series})
        count = int(_value(found[0], "00201209") or 0) if found else 0
        if count > MAX_INSTANCES:
            raise DicomwebError(f"series {series} holds {count} instances, more than the limit of {MAX_INSTANCES}",
                                "retrieve a smaller series")
        folder.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        with self._answers(f"series {series}"):
            for ds in self._client.iter_series(study, series, media_types=(("application/dicom", "*"),)):
                uid = str(ds.get("SOPInstanceUID", ""))
                name = uid if _UID.match(uid) and len(uid) <= 64 else f"instance{len(files):05d}"
                files.append(folder / f"{name}.dcm")
                ds.save_as(files[-1], enforce_file_format=True)
                if len(files) > MAX_INSTANCES:
                    raise DicomwebError(f"series {series} holds more than {MAX_INSTANCES} instances",
                                        "retrieve a smaller series")
        return files

    def store(self, datasets: Sequence[Any]) -> list[dict[str, str]]:
        """STOW-RS: store ``datasets``; return each stored instance's study, series and SOP instance UIDs."""
        stored: list[dict[str, str]] = []
        for at in range(0, len(datasets), STOW_BATCH):
            batch = list(datasets[at:at + STOW_BATCH])
            with self._answers("a store (STOW-RS) request"):
                answer = self._client.store_instances(batch)
            failed = answer.get("FailedSOPSequence", []) if answer is not None else []
            if failed:
                reason = failed[0].get("FailureReason", "?")
                raise DicomwebError(f"{self.url.host} refused {len(failed)} of {len(batch)} instances "
                                    f"(failure reason {reason})", "check that they are valid DICOM")
            stored += [{"study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
                        "instance": str(ds.SOPInstanceUID), "modality": str(ds.get("Modality", ""))}
                       for ds in batch]
        return stored


def _value(item: Mapping[str, Any], tag: str) -> str:
    """One value of a DICOM JSON attribute ('' when absent)."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def parse_query(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` QIDO filters; KEY is a DICOM keyword (PatientID, Modality, StudyDate, ...)."""
    from pydicom.datadict import tag_for_keyword

    query: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(f"--query {pair}: not KEY=VALUE", "e.g. --query Modality=CT --query StudyDate=2024*")
        if tag_for_keyword(key.strip()) is None:
            raise ConfigError(f"--query {key}: not a DICOM keyword", "e.g. PatientID, Modality, StudyDate, "
                                                                    "AccessionNumber, StudyInstanceUID")
        query[key.strip()] = value.strip()
    return query
