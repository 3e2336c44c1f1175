"""Which heavy packages importing some of the package's modules pulls in (a fresh process)."""

import ast
import subprocess
import sys


def heavy_imports(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """The ``heavy`` packages in sys.modules after importing ``e2e_depth_ros.<modules>``."""
    code = ("import sys\n" + "".join(f"import e2e_depth_ros.{m}\n" for m in modules)
            + f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip())
