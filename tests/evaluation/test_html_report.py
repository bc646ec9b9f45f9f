"""report.html: self-contained (images as data URIs, no external reference), results with mean ± sd over seeds,
every run folder below the root, rebuilt by `mmfm report`."""

from __future__ import annotations

import json
import re

import numpy as np


def _fake_run(folder, seeds=(0, 1)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir(parents=True)
    recs = [{"task": "classification", "dataset": "mini", "split": "test", "method": "m", "metric": "accuracy",
             "value": v, "seed": s, "label_fraction": 1.0} for s, v in zip(seeds, (0.5, 0.7))]
    (folder / "results.json").write_text(json.dumps(recs))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2, 3)))
    (folder / "config.yaml").write_text("task: {name: classification}\n")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(folder / "plots" / "reliability.png")
    plt.close(fig)


def test_report_is_self_contained_with_spread(tmp_path):
    from mmfm.cli.main import main

    root = tmp_path / "quick"
    _fake_run(root / "classification")
    _fake_run(root / "segmentation")
    assert main(["report", str(root)]) == 0
    page = (root / "report.html").read_text()
    assert page.count("<section") == 2 and "classification" in page and "segmentation" in page
    mean, sd = np.mean([0.5, 0.7]), np.std([0.5, 0.7], ddof=1)
    assert f"{mean:.4g} ± {sd:.2g} (n=2)" in page
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)   # 2 curves + 2 plots
    assert not re.search(r'(href|src)="(https?:|//)', page)
    assert main(["report", str(tmp_path / "missing")]) == 2
