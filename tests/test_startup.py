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


def test_a_bad_config_file_is_reported_without_loading_torch(tmp_path):
    """`mmfm train|pretrain bad.yaml` answer from the config alone (mmfm.engine.settings is torch-free)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    code = ("import io, contextlib\nfrom mmfm.cli.main import main\ncodes, errs = [], []\n"
            f"for kind in ('train', 'pretrain'):\n    err = io.StringIO()\n"
            f"    with contextlib.redirect_stderr(err):\n        codes.append(main([kind, {str(bad)!r}]))\n"
            "    errs.append(err.getvalue())\n"
            "assert codes == [2, 2], codes\n"
            "assert all(\"unknown config key 'train.max_stepz'\" in e and 'train.max_steps' in e for e in errs), errs")
    assert _loaded_after(code) == []
