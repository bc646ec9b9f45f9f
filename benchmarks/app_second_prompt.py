"""A second click in `mmfm serve` against a second prompt in the library, in one process (issue 31's target: a click
on an upload already embedded costs about what ``benchmarks/promptable.py`` reports for a second prompt).

Both sides run LiteMedSAM on the same 2D CT slice (pydicom's CT_small.dcm) with the same engine (``auto``: ONNX
Runtime on a CPU, torch on a GPU):
- ours: the app over real HTTP (uvicorn on loopback): upload, one click (embeds the slice), then ``--rounds``
  further clicks with boxes that differ by a pixel, each timed from send to response (prompt encoder, mask decoder,
  the mask written as NIfTI, the JSON answer);
- theirs: the decoder alone on the embedding the same Segmenter made (``decode_prompt``), the cost
  ``benchmarks/promptable.py`` reports as "second prompt on an embedded image".

    .venv/bin/python benchmarks/app_second_prompt.py [--rounds 20] [--json docs/results/bench_app_second_prompt.json]

The last line is ``ratio: X.XX`` = decoder seconds / app seconds per second prompt (1.0: the app adds nothing;
0.5: a click costs twice the decoder). The slice is not embedded again by any click: the app's segmenter counts
its embeddings, printed as ``embedded``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from _common import check_rounds, cpu_header, print_ratio, provenance, write_records
from pydicom.data import get_testdata_file

from mmfm.app.server import create_app
from mmfm.evaluation.results import ResultRecord


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="second prompts timed on each side (median; >= 3)")
    ap.add_argument("--json", help="write the numbers as result records")
    a = ap.parse_args()
    check_rounds(a.rounds)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(cpu_header(device))
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        sys.exit("pydicom's test file CT_small.dcm is not installed (pip install pydicom-data)")
    data = Path(path).read_bytes()
    app = create_app(["litemedsam"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    boxes = [[30 + i % 4, 30, 90, 90 - i % 3] for i in range(a.rounds)]
    try:
        with httpx.Client(timeout=600) as c:
            sid = c.post(f"{url}/api/upload", content=data, headers={"X-Filename": "ct.dcm"}).json()["id"]
            t = time.perf_counter()
            c.post(f"{url}/api/segment/{sid}", json={"box": [30, 30, 90, 90]}).raise_for_status()
            first = time.perf_counter() - t
            clicks = []
            for box in boxes:
                t = time.perf_counter()
                c.post(f"{url}/api/segment/{sid}", json={"box": box}).raise_for_status()
                clicks.append(time.perf_counter() - t)
        # the upload's own Segmenter, read from the app's state (a benchmark may look inside; the app exposes no
        # such route): its embedding count, and the engine model and embedding the decoder-only side reuses
        state = app.state.mmfm
        (segmenter,) = [v for k, v in state._segmenters.items() if k[0] == sid]
        embedded = segmenter.embedded
        from mmfm.tasks.promptable import decode_prompt

        engine = next(iter(segmenter._cache))
        net = segmenter._engines[engine]
        emb, frame = segmenter._cache[engine]["plane"]
        decoder = []
        for box in boxes:
            t = time.perf_counter()
            decode_prompt(net, emb, frame, box)
            decoder.append(time.perf_counter() - t)
    finally:
        srv.should_exit = True
    click, dec = statistics.median(clicks), statistics.median(decoder)
    print(f"first click (embeds the slice): {first:.3f} s")
    print(f"second click in the app: {click * 1e3:.1f} ms (median of {a.rounds}); decoder alone: {dec * 1e3:.1f} ms")
    print(f"embedded: {embedded} (1: no click embedded the slice again); engine: {engine}")
    if a.json:
        values = {"s per second click (app, HTTP)": click, "s per second prompt (decoder)": dec,
                  "s first click": first, "slices embedded": embedded}
        write_records(a.json, [ResultRecord("app second prompt", "CT_small.dcm", "bench", "mmfm serve", m,
                                            float(v), 0) for m, v in values.items()],
                      provenance(device, {"both": f"fp32, engine {engine}"}))
    print_ratio(dec / click, f"mmfm serve, a click on an embedded upload (HTTP, mask written), engine {engine}",
                f"decode_prompt on the same embedding (benchmarks/promptable.py's second prompt), engine {engine}")


if __name__ == "__main__":
    main()
