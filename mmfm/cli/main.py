"""`mmfm`: medical multimodal foundation models, from data to evaluation.

This module only assembles the command families (one module each in ``mmfm/cli/``: training, vision_language,
downstream, trust, app, zoo, data, pacs) into one parser and dispatches; each subcommand parses its arguments and
calls one library function. Errors in the user's input are printed as one message with a hint (exit status 2),
never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from mmfm.cli import app, data, downstream, logs, pacs, training, trust, vision_language, zoo
from mmfm.errors import MMFMError

EPILOG = """examples:
  mmfm quickstart                          prepare the built-in 'mini' data, train baselines, write a report
  mmfm data list                           datasets of the review's Tables I-III that mmfm can load
  mmfm data info MIMIC-CXR                 licence, how to obtain it, the expected folder layout
  mmfm data inspect scan.dcm --json        what mmfm reads from a file (shape, spacing, orientation, ...)
  mmfm data prepare mini                   build the built-in corpus and print its data card
  mmfm train configs/quickstart_classification.yaml train.max_steps=50 out=runs/cls
  mmfm pretrain configs/pretrain/mae_2d.yaml              pretrain a ViT by masked autoencoding
  mmfm predict runs/cls scan.dcm --out predictions/         apply a trained run to new images
  mmfm evaluate --encoder runs/pretrain/mae_2d random:vit_mini litemedsam --protocol linear knn
  mmfm pretrain configs/pretrain/clip_2d.yaml             align images and captions (CLIP; also gloria, medclip)
  mmfm zeroshot --model runs/pretrain/clip_2d             classify mini patches from prompts, no labels used
  mmfm retrieve --model runs/pretrain/clip_2d             image<->text Recall@1/5/10
  mmfm retrieve --text-encoder minilm                     IU report section matching (impression given findings)
  mmfm report-gen configs/report_generation_2d.yaml       image encoder + text decoder; BLEU, ROUGE-L, CIDEr, CE
  mmfm vqa configs/vqa_2d.yaml                            closed- and free-text visual question answering
  torchrun --nproc_per_node 2 -m mmfm.cli.main train CONFIG      data-parallel training (DDP)
  mmfm federate simulate configs/federated_classification.yaml  sites trained with Flower (FedAvg/FedProx)
  mmfm continual configs/continual_mini.yaml              tasks in sequence, forgetting with/without experts
  mmfm chat --model smollm2 "What is a CT scan?"        ask a small offline language model (research output)
  mmfm summarize --max-reports 50                         IU findings -> impression: SmolLM2 against baselines
"""

# the order `mmfm --help` lists the commands (and `mmfm data --help` the actions) in
COMMANDS = ("quickstart", "train", "pretrain", "federate", "continual", "evaluate", "zeroshot", "retrieve",
            "report-gen", "vqa", "segment", "predict", "serve", "chat", "summarize", "report", "explain", "register",
            "zoo", "data")
DATA_ACTIONS = ("list", "info", "inspect", "label", "shard", "deid", "pull", "push", "verify", "prepare")
FAMILIES = (training, vision_language, downstream, trust, app, zoo)
# every command (`mmfm data ACTION`, `mmfm zoo ACTION` for those) -> the public function of `mmfm` that does its work
# (tests/cli/test_cli_api_map.py checks that every command has one and that its handler calls it)
API_MAP = {command: name for family in (*FAMILIES, data, pacs) for command, name in family.API.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmfm", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    adders = {name: add for family in FAMILIES for name, add in family.COMMANDS.items()}
    actions = {**data.ACTIONS, **pacs.ACTIONS}
    for name in COMMANDS:
        if name == "data":
            dsub = data.add_data(sub)
            for action in DATA_ACTIONS:
                actions[action](dsub)
        else:
            adders[name](sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    logs.setup()  # the library's log lines on stdout, as `[mmfm] ...`
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `mmfm zoo export NAME --format onnx OUT`: the output folder after an option (argparse has closed the
    # positional list there too)
    if len(extra) == 1 and not extra[0].startswith("-") and getattr(args, "action", None) == "export" \
            and getattr(args, "target", "") is None:
        args.target, extra = extra[0], []
    # key=value overrides after an option (`mmfm data shard A B --shard-size 5 data.size=[32,32]`): argparse has
    # already closed the positional list; they are still overrides, anything else is an unknown argument
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in t and not t.startswith("-") for t in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        (parser if args.command != "data" else parser._subparsers._group_actions[0].choices["data"]).print_help()
        return 1
    try:
        rc = func(args)
        if os.environ.get("WORLD_SIZE", "1") != "1":    # a torchrun worker: see finish_worker
            from mmfm.engine.distributed import finish_worker

            return finish_worker(rc)
        return rc
    except MMFMError as e:
        print(f"mmfm: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("mmfm: error: out of memory\n  hint: lower train.batch_size or data.size, or use a smaller encoder",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("mmfm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the file system: permission denied, disk full, a path that is not there
        if os.environ.get("MMFM_DEBUG") == "1":
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"mmfm: error: {e.strerror or e}{where}\n  hint: check the path, its permissions and the free disk "
              "space", file=sys.stderr)
        return 2
    except Exception as e:  # a bug in mmfm, not in the user's input: one line, and how to get the details
        if os.environ.get("MMFM_DEBUG") == "1":
            raise
        print(f"mmfm: internal error: {type(e).__name__}: {e}\n  hint: this is a bug in mmfm, not in your input; "
              "run again with MMFM_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
