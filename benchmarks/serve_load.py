"""Load on `mmfm serve`: N concurrent box-prompt segment requests (LiteMedSAM, 2D CT slice) against one app
process on this machine, over real HTTP (uvicorn on loopback). Every request must succeed; the latency of each
(seconds from send to response) is reported as median and 95th percentile, with the wall time of the burst and the
seconds of one request alone for comparison. The app serialises model calls (one at a time on a 2-core machine
beats oversubscribing it), so the median grows with the queue: that is the number a user waits.

    .venv/bin/python benchmarks/serve_load.py [--requests 20] [--json docs/results/bench_serve.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from pydicom.data import get_testdata_file

from mmfm.app.server import create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--json", help="write the records here")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(["litemedsam"]), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    data = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    with httpx.Client(timeout=600) as c:
        sid = c.post(f"{url}/api/upload", content=data, headers={"X-Filename": "ct.dcm"}).json()["id"]
        t = time.perf_counter()
        c.post(f"{url}/api/segment/{sid}", json={"box": [30, 30, 90, 90]}).raise_for_status()
        alone = time.perf_counter() - t

    def one(i: int) -> tuple[float, int]:
        with httpx.Client(timeout=600) as c:
            t0 = time.perf_counter()
            r = c.post(f"{url}/api/segment/{sid}", json={"box": [30 + i % 5, 30, 90, 90]})
            return time.perf_counter() - t0, r.status_code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.requests) as pool:
        results = list(pool.map(one, range(a.requests)))
    wall = time.perf_counter() - t0
    srv.should_exit = True
    lat = sorted(r[0] for r in results)
    errors = sum(1 for r in results if r[1] != 200)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    out = {"requests": a.requests, "errors": errors, "median_s": statistics.median(lat), "p95_s": p95,
           "wall_s": wall, "alone_s": alone, "throughput_per_s": a.requests / wall}
    for k, v in out.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if a.json:
        recs = [{"task": "serve", "dataset": "CT_small.dcm", "split": "load", "method": "mmfm-serve", "metric": k,
                 "value": float(v), "seed": 0, "label_fraction": 1.0} for k, v in out.items()]
        Path(a.json).write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
