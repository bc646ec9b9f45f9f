"""ONNX Runtime as the inference engine of a promptable segmenter: the same model, exported once, run by a runtime
made for inference (graph optimisation, fused kernels, one thread pool), a swap for the torch modules rather than a
fork of them.

* :func:`export_onnx` writes two graphs, as SAM's own ONNX export splits the model: the image encoder
  (image (B, 3, S, S) in [0, 1] -> embedding (B, D, g, g)) and the prompt encoder + mask decoder (embedding, point
  coordinates and labels, mask prompt -> mask logits and the IoU estimate), plus a JSON that says what the
  inputs and outputs are, how images are preprocessed and the SHA-256 of each graph, so other tools (3D Slicer,
  OHIF plug-ins) run the same model.
* Prompts in the decoder graph are SAM's ONNX form: every prompt is a list of points with labels -- 1 inside,
  0 outside, 2 and 3 a box's top-left and bottom-right corners, -1 padding (a prompt without a box ends with one
  padding point, as SAM's prompt encoder does) -- so one graph takes a box, clicks or both;
  ``has_mask_input`` (0 or 1) says whether ``mask_input`` (the previous logits) is the dense prompt.
* :class:`OnnxSegmenter` runs the two graphs with ``embed``/``decode`` as :class:`PromptableSegmenter` has them,
  so :func:`~mmfm.tasks.promptable.predict_slice`, :func:`~mmfm.tasks.promptable.propagate` and the per-slice
  embedding cache use it unchanged.
* :func:`cached_engine` exports a model once per weights (keyed by their SHA-256) into ``$MMFM_HOME/onnx``.
* ``int8``: dynamic int8 quantisation of the image encoder's matrix products (ONNX Runtime's
  ``quantize_dynamic``); kept only where it leaves the masks as they were (``benchmarks/promptable.py``).

Reference: Kirillov et al., Segment Anything, ICCV 2023 (``segment_anything/utils/onnx.py``: the decoder graph).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmfm.data.sources.fetch import mmfm_home, sha256
from mmfm.errors import ConfigError

# no int8 engine: the int8 encoder changed the LiTS liver Dice beyond issue 26's rule (benchmarks/promptable.py)
ENGINES = ("torch", "onnx", "auto")
ENCODER_FILE, DECODER_FILE, INT8_ENCODER_FILE = "image_encoder.onnx", "prompt_mask_decoder.onnx", \
    "image_encoder.int8.onnx"
MANIFEST = "model.onnx.json"
OPSET = 17
WRITTEN_BY = "mmfm onnx export"


def onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("the onnx engine needs the onnxruntime package",
                          "pip install onnxruntime (make setup installs it), or use --engine torch") from None
    return ort


class DecoderGraph(nn.Module):
    """The prompt encoder + mask decoder of a :class:`~mmfm.tasks.promptable.PromptableSegmenter` with
    fixed-type inputs (SAM's ONNX form): embedding (1, D, g, g), point_coords (1, N, 2) in input-size pixels,
    point_labels (1, N) (1 in, 0 out, 2/3 box corners, -1 padding), mask_input (1, 1, 4g, 4g) logits,
    has_mask_input (1,) -> mask logits (1, 1, S, S), IoU estimate (1, 1).

    Written out rather than calling the prompt encoder: its boolean-index assignments (``emb[labels == -1] = 0``)
    do not trace to a graph; the sums below are the same embedding, term for term."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.prompt, self.decoder, self.size = model.prompt_encoder, model.mask_decoder, model.input_size

    def forward(self, embedding: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.prompt
        sparse = pe.pe_layer.forward_with_coords(point_coords + 0.5, pe.input_image_size)   # (1, N, D)
        lab = point_labels[..., None]                                                      # (1, N, 1)
        sparse = sparse * (lab != -1) + pe.not_a_point_embed.weight * (lab == -1)
        for i in range(pe.num_point_embeddings):
            sparse = sparse + pe.point_embeddings[i].weight * (lab == i)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        low, iou = self.decoder.predict_masks(embedding, pe.get_dense_pe(), sparse, dense)
        low, iou = low[:, :1], iou[:, :1]                                   # SAM's single-mask output
        if low.shape[-1] != self.size:
            low = F.interpolate(low, size=(self.size,) * 2, mode="bilinear", align_corners=False)
        return low, iou


def prompt_points(boxes: torch.Tensor | None, points: torch.Tensor | None, labels: torch.Tensor | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """boxes (1, 4), points (1, N, 2), labels (1, N) (input-size pixels) -> the decoder graph's point_coords
    (1, M, 2) and point_labels (1, M) float32, in the prompt encoder's order: points, then padding or the box."""
    coords, labs = [], []
    if points is not None:
        coords.append(points.reshape(1, -1, 2).float().cpu().numpy())
        labs.append(labels.reshape(1, -1).float().cpu().numpy())
    if boxes is not None:
        coords.append(boxes.reshape(1, 2, 2).float().cpu().numpy())
        labs.append(np.array([[2.0, 3.0]], np.float32))
    else:
        coords.append(np.zeros((1, 1, 2), np.float32))
        labs.append(np.array([[-1.0]], np.float32))
    return np.concatenate(coords, axis=1).astype(np.float32), np.concatenate(labs, axis=1).astype(np.float32)


def export_onnx(model: nn.Module, folder: Path, int8: bool = False, source: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Write ``model``'s two graphs (and the int8 encoder with ``int8``) and :data:`MANIFEST` into ``folder``
    (an empty folder the caller owns); return the manifest. ``source``: what the weights are (name, SHA-256)."""
    if getattr(model, "text_prompt", None) is not None:
        raise ConfigError(f"{model.name} takes text prompts, which the ONNX graphs do not carry",
                          "run it with --engine torch")
    model = model.eval().float().cpu()
    s = model.input_size
    g = tuple(model.prompt_encoder.image_embedding_size)
    mask_size = tuple(model.prompt_encoder.mask_input_size)
    image = torch.rand(1, 3, s, s)
    with torch.no_grad():
        embedding = model.image_encoder(image)
    dim = embedding.shape[1]
    # the TorchScript exporter: fixed shapes but the batch (encoder) and the number of prompt points (decoder);
    # its tracer warns about shape checks that are constants for these fixed shapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export_graphs(model, folder, image, embedding, mask_size)
    files = [ENCODER_FILE, DECODER_FILE]
    if int8:
        quantize_encoder(folder / ENCODER_FILE, folder / INT8_ENCODER_FILE)
        files.append(INT8_ENCODER_FILE)
    manifest = {
        "written_by": WRITTEN_BY, "model": source or {"name": model.name}, "opset": OPSET,
        "files": {f: {"sha256": sha256(folder / f), "bytes": (folder / f).stat().st_size} for f in files},
        "image_encoder": {"file": ENCODER_FILE, "inputs": {"image": ["batch", 3, s, s]},
                          "outputs": {"embedding": ["batch", dim, *g]}},
        "prompt_mask_decoder": {
            "file": DECODER_FILE,
            "inputs": {"embedding": [1, dim, *g], "point_coords": [1, "points", 2], "point_labels": [1, "points"],
                       "mask_input": [1, 1, *mask_size], "has_mask_input": [1]},
            "outputs": {"mask_logits": [1, 1, s, s], "iou": [1, 1]},
            "point_labels": {"1": "inside", "0": "outside", "2": "box top-left (x0, y0)",
                             "3": "box bottom-right (x1, y1)", "-1": "padding (one, after the points, when there "
                                                                     "is no box)"},
            "coordinates": f"(x, y) = (column, row) pixels of the {s} x {s} model input (the image's pixels times "
                           "the preprocessing scale)",
            "mask_input": "the previous mask_logits (SAM's dense mask prompt) resized to mask_input's size, with "
                          "has_mask_input 1; zeros with has_mask_input 0",
        },
        "preprocessing": {
            "steps": [f"resize the longest side to {s} keeping the aspect ratio (bilinear, antialiased)",
                      "min-max scale the intensities to [0, 1]",
                      "grey images: repeat to 3 channels",
                      f"pad with zeros at the bottom and right to {s} x {s}"],
            "mask": "mask_logits[..., :h, :w] (the resized image's size), resized back to the image, > 0",
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _export_graphs(model: nn.Module, folder: Path, image: torch.Tensor, embedding: torch.Tensor,
                   mask_size: tuple[int, ...]) -> None:
    torch.onnx.export(model.image_encoder, (image,), str(folder / ENCODER_FILE), input_names=["image"],
                      output_names=["embedding"], dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=OPSET, dynamo=False)
    inputs = (embedding, torch.tensor([[[10.0, 10.0], [200.0, 200.0]]]), torch.tensor([[2.0, 3.0]]),
              torch.zeros(1, 1, *mask_size), torch.zeros(1))
    torch.onnx.export(DecoderGraph(model), inputs, str(folder / DECODER_FILE),
                      input_names=["embedding", "point_coords", "point_labels", "mask_input", "has_mask_input"],
                      output_names=["mask_logits", "iou"],
                      dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
                      opset_version=OPSET, dynamo=False)


def quantize_encoder(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the encoder's matrix products (weights int8, activations quantised on the
    fly); convolutions stay fp32 (ONNX Runtime's integer convolution is slower on CPUs than its fp32 one)."""
    onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)


class OnnxSegmenter(nn.Module):
    """The two exported graphs run by ONNX Runtime, with :class:`PromptableSegmenter`'s ``embed``/``decode``
    (torch tensors in and out, on the CPU). No parameters: nothing to train or move."""

    def __init__(self, folder: Path, int8: bool = False, threads: int | None = None, name: str = "litemedsam"
                 ) -> None:
        super().__init__()
        ort = onnxruntime()
        manifest = json.loads((folder / MANIFEST).read_text())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        enc = INT8_ENCODER_FILE if int8 else ENCODER_FILE
        if enc not in manifest["files"]:
            raise ConfigError(f"{folder} has no int8 encoder", "export it with int8=True")
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / enc), opts, providers=providers)
        self.decoder = ort.InferenceSession(str(folder / DECODER_FILE), opts, providers=providers)
        self.input_size = int(manifest["image_encoder"]["inputs"]["image"][-1])
        self.mask_input_size = tuple(manifest["prompt_mask_decoder"]["inputs"]["mask_input"][-2:])
        self.name, self.engine, self.text_prompt = name, "onnx-int8" if int8 else "onnx", None

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) -> embedding (B, D, g, g)."""
        (emb,) = self.encoder.run(None, {"image": image.float().cpu().contiguous().numpy()})
        return torch.from_numpy(emb)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, text: torch.Tensor | None = None,
               mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`PromptableSegmenter.decode`, for one image (batch 1)."""
        if text is not None:
            raise ConfigError("the onnx engine takes no text prompt", "use --engine torch for a text-prompted model")
        coords, labs = prompt_points(boxes, points, labels)
        if mask_input is not None:
            if tuple(mask_input.shape[-2:]) != self.mask_input_size:
                mask_input = F.interpolate(mask_input.float(), size=self.mask_input_size, mode="bilinear",
                                           align_corners=False)
            mask, has = mask_input.float().cpu().numpy(), np.ones(1, np.float32)
        else:
            mask, has = np.zeros((1, 1, *self.mask_input_size), np.float32), np.zeros(1, np.float32)
        low, iou = self.decoder.run(None, {"embedding": embedding.float().cpu().contiguous().numpy(),
                                           "point_coords": coords, "point_labels": labs, "mask_input": mask,
                                           "has_mask_input": has})
        return torch.from_numpy(low), torch.from_numpy(iou)


def cached_engine(model: nn.Module, key: str, int8: bool = False, home: Path | None = None) -> Path:
    """The folder of ``model``'s exported graphs under ``$MMFM_HOME/onnx/<key>`` (``key``: the weights' SHA-256),
    exported on first use into a fresh folder and moved into place whole (a failed export leaves nothing)."""
    root = (home or mmfm_home()) / "onnx" / key[:32]
    want = [ENCODER_FILE, DECODER_FILE] + ([INT8_ENCODER_FILE] if int8 else [])
    if _complete(root, want):
        return root
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)         # our own pid's leftover: an export that failed in this process
    tmp.mkdir(parents=True)
    try:
        export_onnx(model, tmp, int8=int8, source={"name": model.name, "sha256": key})
        if root.exists() and not _complete(root, want):   # an older or unfinished export of ours: replaced
            shutil.rmtree(root)
        try:
            tmp.rename(root)
        except OSError:                            # another process finished the same export first
            if not _complete(root, want):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _complete(root: Path, files: list[str]) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("written_by") == WRITTEN_BY and all(
        f in manifest.get("files", {}) and (root / f).is_file() for f in files)


def resolve_engine(engine: str, device: torch.device, precision: str, text: bool = False) -> tuple[str, str]:
    """The engine to run (torch or onnx) and why. ``auto``: ONNX Runtime (fp32) on a CPU, where it
    measured faster than torch for the image encoder and the decoder alike (``benchmarks/promptable.py``,
    docs/speed.md); torch on a GPU (this onnxruntime build runs on the CPU only), in bf16 and for text prompts
    (the graphs are fp32 and carry no text)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine} is not an inference engine mmfm offers", f"use one of {ENGINES}")
    if engine == "torch":
        return "torch", "asked"
    blocker = ("the model takes a text prompt" if text else "the device is a GPU" if device.type != "cpu" else
               f"precision {precision} (the ONNX graphs are fp32)" if precision != "fp32" else "")
    if engine == "auto":
        if blocker:
            return "torch", f"auto: {blocker}"
        try:
            onnxruntime()
        except ConfigError:
            return "torch", "auto: onnxruntime is not installed"
        return "onnx", "auto: ONNX Runtime on the CPU"
    if blocker:
        raise ConfigError(f"--engine {engine} cannot run here: {blocker}", "use --engine torch or auto")
    return engine, "asked"


def inference_model(model: nn.Module, engine: str, key: str) -> nn.Module:
    """``model`` run by ``engine`` (from :func:`resolve_engine`): itself for torch, else its cached ONNX graphs
    (``key``: the weights' SHA-256)."""
    if engine == "torch":
        return model
    return OnnxSegmenter(cached_engine(model, key), name=getattr(model, "name", "model"))
