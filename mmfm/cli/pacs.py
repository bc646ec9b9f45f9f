"""`mmfm data pull | push`: a PACS over DICOMweb (and the lines that report what was stored there)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mmfm import api

URL_HELP = ("dicomweb+http(s)://HOST[:PORT]/PATH[/studies/<StudyUID>[/series/<SeriesUID>]]; credentials from "
            "MMFM_DICOMWEB_TOKEN, MMFM_DICOMWEB_USER / MMFM_DICOMWEB_PASSWORD or netrc (docs/pacs.md)")


def add_pull(dsub: Any) -> None:
    pl = dsub.add_parser(
        "pull", help="retrieve a study or series from a PACS (DICOMweb WADO-RS), optionally de-identified",
        description="Retrieve the series URL names (a series, every series of a study, or with --query the "
                    "series a QIDO-RS search selects) into DIR/<study>/<series>/<instance>.dcm. With --deid the "
                    "files are de-identified on the way (the PS3.15 profile of `mmfm data deid`, with its deid.json "
                    "and audit): the identified copies only lie in a private temporary folder, removed afterwards. "
                    "DIR must be new or empty.",
        epilog="examples:\n  mmfm data pull dicomweb+https://pacs.example.org/dicom-web/studies/1.2.3 ct/ --deid\n"
               "  mmfm data pull dicomweb+http://localhost:8042/dicom-web scans/ --query Modality=CT "
               "--query StudyDate=20240101-20241231",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pl.add_argument("url", help=URL_HELP)
    pl.add_argument("out", help="new or empty folder")
    pl.add_argument("--deid", action="store_true", help="de-identify on the way (PS3.15 Basic Profile)")
    pl.add_argument("--query", action="append", default=[], metavar="KEY=VALUE",
                    help="a QIDO-RS filter on a DICOM keyword (repeatable), e.g. Modality=CT, PatientID=X")
    pl.add_argument("--json", action="store_true", help="print the summary as JSON")
    pl.set_defaults(func=_cmd_pull)


def add_push(dsub: Any) -> None:
    ps = dsub.add_parser(
        "push", help="store DICOM files on a PACS (DICOMweb STOW-RS)",
        description="Store every DICOM file under DIR (a file or folder; symlinks are not followed) on the "
                    "DICOMweb service URL with STOW-RS, 16 instances per request.",
        epilog="example:\n  mmfm data push results/ dicomweb+http://localhost:8042/dicom-web",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.add_argument("folder", help="a DICOM file or a folder of them")
    ps.add_argument("url", help="the service: dicomweb+http(s)://HOST[:PORT]/PATH (or a study in it)")
    ps.add_argument("--json", action="store_true", help="print what was stored as JSON")
    ps.set_defaults(func=_cmd_push)


def _cmd_pull(a: argparse.Namespace) -> int:
    summary = api.pull(a.url, a.out, deid=a.deid, query=a.query, progress=not a.json)
    if a.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['instances']} instances of {summary['series']} series retrieved into {a.out}"
          + (" and de-identified" if a.deid else ""))
    if a.deid:
        c = summary["deid"]
        print(f"  {c['written']} written, {c['skipped']} skipped, {c['withheld']} withheld by the audit "
              f"(see {a.out}/deid.json)")
    return 0


def _cmd_push(a: argparse.Namespace) -> int:
    summary = api.push(a.folder, a.url)
    if a.json:
        print(json.dumps(summary))
        return 0
    stored = summary["stored"]
    series = {s["series"] for s in stored}
    print(f"stored {len(stored)} instances of {len(series)} series on {summary['to']}")
    if summary["not_dicom"]:
        print(f"  {summary['not_dicom']} files that are not DICOM left out", file=sys.stderr)
    return 0


def print_stored(stored: list[dict[str, str]]) -> None:
    """The UIDs of what `mmfm segment --out URL` stored."""
    for s in stored:
        print(f"stored {s['modality'] or 'DICOM'} in study {s['study']}: series {s['series']}, "
              f"instance {s['instance']}")


ACTIONS = {"pull": add_pull, "push": add_push}

# `mmfm data ACTION` -> the public function of `mmfm` its handler calls for the work
API = {"data pull": "pull", "data push": "push"}
