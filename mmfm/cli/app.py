"""`mmfm serve | report`: the local web app and a run's self-contained report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmfm import api
from mmfm.errors import MMFMError


def add_serve(sub: Any) -> None:
    sv = sub.add_parser("serve", help="a local web app: upload a scan, segment with a box, zero-shot, saliency",
                        description="Start a web app on this machine (127.0.0.1 by default): upload a DICOM file or "
                                    "series (zip), NIfTI, MetaImage, NRRD or PNG; scroll the slices with a window "
                                    "preset; draw a box or click points for a LiteMedSAM mask (2D, or propagated "
                                    "through a volume), downloaded as NIfTI on the input's grid; zero-shot "
                                    "classification and text retrieval with an image-text run; a saliency overlay "
                                    "with a classification run; questions to an assistant (smollm2, or a "
                                    "report-gen / vqa run with its bridge: about the image); the de-identified "
                                    "header. Uploads stay in a "
                                    "temporary folder deleted when the app stops.")
    sv.add_argument("--model", action="append", default=[],
                    help="litemedsam (default), a language model (smollm2), or a run folder: classification, "
                         "segmentation, promptable, image-text, or report-gen / vqa with task.decoder (repeatable)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sv.add_argument("--max-upload-mb", type=float, default=512, help="largest upload accepted (default 512 MB)")
    sv.add_argument("--dicomweb", metavar="URL", help="a PACS to list series from, open them and store masks back "
                                                      "as DICOM SEG (dicomweb+http(s)://HOST[:PORT]/PATH[/studies/"
                                                      "UID]; docs/pacs.md)")
    sv.set_defaults(func=_cmd_serve)



def add_report(sub: Any) -> None:
    rp = sub.add_parser("report", help="rebuild a run's report.html (self-contained, opens offline)",
                        description="Write RUN_DIR/report.html from the run's files alone: results with seeds and "
                                    "spread, training curves, every plot the run wrote (label efficiency, "
                                    "reliability, segmentation cases, saliency, embeddings), calibration and "
                                    "privacy records, the data card and the configuration; images embedded.")
    rp.add_argument("run_dir", help="a run folder (mmfm train, pretrain, evaluate, quickstart, ...)")
    rp.set_defaults(func=_cmd_report)


def _cmd_serve(a: argparse.Namespace) -> int:
    api.serve(a.model or ["litemedsam"], a.host, a.port, max_upload_mb=a.max_upload_mb, dicomweb=a.dicomweb)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    run = Path(a.run_dir)
    if not run.is_dir():
        raise MMFMError(f"{run} is not a folder", "give the --out folder of an mmfm run")
    print(f"wrote {api.report(run)}")
    return 0


COMMANDS = {"serve": add_serve, "report": add_report}

# `mmfm COMMAND` -> the public function of `mmfm` its handler calls for the work
API = {"serve": "serve", "report": "report"}
