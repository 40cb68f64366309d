"""Write notebooks/<name>.ipynb (no outputs) from notebooks/src/<name>.py; `make reproduce` then
executes them.

The sources are jupytext percent-format files: edit them (in any editor, or in JupyterLab with
jupytext), run `python tools/build_notebooks.py`, then `make reproduce`.
`python tools/build_notebooks.py --check` only reports notebooks out of sync with their source
(exit 1), as tests/test_notebooks.py does.
"""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relnas.notebooks import notebook_from_source, out_of_sync  # noqa: E402


def main(check: bool = False) -> int:
    stale = 0
    for source in sorted((ROOT / "notebooks" / "src").glob("*.py")):
        target = ROOT / "notebooks" / f"{source.stem}.ipynb"
        if check:
            problems = out_of_sync(source, target) if target.exists() else ["missing"]
            for problem in problems:
                print(f"{target.name}: {problem}")
            stale += bool(problems)
        else:
            nbformat.write(notebook_from_source(source), target)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
