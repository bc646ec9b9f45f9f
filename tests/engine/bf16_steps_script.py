"""One bf16 step, then one fp32 step, of every objective case of test_bf16.py, in a fresh process, printed as JSON.

Run with ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 (test_bf16 does): oneDNN's CPU bf16 convolution backward can return
NaN weight gradients from a primitive cached by earlier convolutions in the same process (the trainer recomputes
such steps in fp32, see mmfm.engine.trainer), so a test with the cache would measure that kernel bug, not mmfm.
"""

from __future__ import annotations

import json

import torch

from tests.engine.test_bf16 import build_case, case_ids, one_step


def main() -> None:
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
