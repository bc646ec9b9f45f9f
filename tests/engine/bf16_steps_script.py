"""One bf16 step, then one fp32 step, of every objective case of test_bf16.py, in a fresh process, printed as JSON.

oneDNN is switched off here: its CPU bf16 convolution backward now and then returns NaN weight gradients (seen
after earlier convolutions in the same process, and once on CI for DAE 3D even with its primitive cache off, not
reproducible in isolation). The trainer recomputes such steps in fp32 (mmfm.engine.trainer; tested in
test_bf16_commands and test_bf16's trainer test), so it is not what this script measures: mmfm's own numerics in
bf16. ATen's reference kernels give the same bf16 losses (checked: DAE 3D 1.3331 with and without oneDNN).
"""

from __future__ import annotations

import json

import torch

from tests.engine.test_bf16 import build_case, case_ids, one_step


def main() -> None:
    torch.backends.mkldnn.enabled = False
    ids = case_ids()
    out: dict[str, dict] = {i: {} for i in ids}
    for used in ("bf16", "fp32"):
        for i in ids:
            obj, batch = build_case(i)
            loss, names, grads = one_step(obj, batch, used)
            bad = [n for n, g in zip(names, grads) if not torch.isfinite(g).all()]
            out[i][used] = {"loss": loss, "params_with_grad": names, "non_finite": bad}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
