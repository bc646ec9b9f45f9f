"""Start-up stays light: the CLI module imports neither torch nor MONAI (each command imports what it needs), so
`mmfm --help` and argument errors answer at once."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "monai", "numpy", "transformers", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_the_package_loads_no_heavy_library():
    assert _loaded_after("import mmfm, mmfm.cli.main") == []


def test_help_and_argument_errors_load_no_heavy_library():
    code = ("from mmfm.cli.main import main\n"
            "for argv in (['--help'], ['train', '--help'], ['predict', '--help'], ['predict', 'run'], ['nope']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass")
    assert _loaded_after(code) == []
