"""The CLI calls the public API: every `mmfm` command (from the argparse parser) maps to one public function of
`mmfm` (``mmfm.cli.main.API_MAP``), its handler calls that function, and no CLI module reaches into
``mmfm.workflows`` for work the API does."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path

import mmfm
from mmfm import api
from mmfm.cli.main import API_MAP, build_parser

CLI = Path(mmfm.__file__).parent / "cli"
# what CLI modules may still import from mmfm.workflows, and why: none of it is a command's work
WORKFLOW_IMPORTS = {
    ("mmfm.workflows.pacs", "local_images"),        # DICOMweb URL arguments: temporary local copies
    ("mmfm.workflows.pacs", "remote_paths"),        # segment IMAGE/--out URLs: local copies, the SEG stored back
    ("mmfm.workflows.pacs", "store_files"),         # --store URL: the DICOM outputs sent to a PACS
    ("mmfm.workflows.segment", "labelled_structures"),   # --box/--label/--prompts read into structures
    ("mmfm.workflows.zeroshot_predict", "is_image_text_run"),  # --classes checked against RUN's kind
    ("mmfm.workflows.chat", "LABEL"),               # the line printed under each answer
    ("mmfm.workflows.chat", "check_image"),         # --image checked before the model loads
    ("mmfm.workflows.chat", "interactive"),         # the line-by-line chat on stdin/stdout
    ("mmfm.workflows.chat", "read_run_image"),      # the interactive chat's image
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every `mmfm` command -> its parser: the subcommands, the actions of `data` (sub-parsers) and of `zoo` (a
    choice argument)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = {}
    for name, parser in sub.choices.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        actions = [a for a in parser._actions if a.dest == "action" and a.choices]
        if nested:
            commands |= {f"{name} {n}": p for n, p in nested[0].choices.items()}
        elif actions:
            commands |= {f"{name} {n}": parser for n in actions[0].choices}
        else:
            commands[name] = parser
    return commands


def test_every_command_maps_to_one_public_function_of_mmfm():
    commands = _commands()
    assert {"segment", "data deid", "data pull", "zoo export", "chat", "serve"} <= set(commands)
    assert set(commands) - set(API_MAP) == set(), "a command without an entry in API_MAP"
    assert set(API_MAP) - set(commands) == set(), "an API_MAP entry for a command that does not exist"
    for command, name in API_MAP.items():
        assert name in mmfm.__all__ and name in api.__all__, (command, name)
        assert callable(getattr(mmfm, name)) and getattr(mmfm, name).__doc__, (command, name)


def test_each_handler_calls_its_function():
    for command, parser in _commands().items():
        handler = parser.get_default("func")
        assert handler is not None, command
        source = inspect.getsource(handler)
        assert re.search(rf"\bapi\.{API_MAP[command]}\b", source), f"{command}: {handler.__name__} does not call " \
                                                                   f"mmfm.{API_MAP[command]}"


def test_the_cli_imports_from_workflows_only_what_is_not_a_commands_work():
    found = set()
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmfm.workflows"):
                found |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("mmfm.workflows") for a in node.names), path.name
    assert found <= WORKFLOW_IMPORTS, found - WORKFLOW_IMPORTS
