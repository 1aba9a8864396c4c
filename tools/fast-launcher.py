"""Write .venv/bin/kubirun as a launcher that starts Python with -S.

pip's console script starts the interpreter with ``site``, which costs
~2 ms at every start (reading .pth files, importing setuptools'
_distutils_hack).  This launcher skips it and puts on ``sys.path`` exactly
what ``site`` would have added for kubirun: the checkout (an editable
install) and the virtualenv's site-packages.  Run by ``make``; pip
reinstalling the package brings the plain console script back, which works
too, only slower.  The launcher's own directory (the virtualenv's bin/,
which Python puts first) is replaced, not searched: nothing is imported
from there, and every first import would list it.
"""
from __future__ import annotations

import os
import sys
import sysconfig

LAUNCHER = """#!{python} -S
# kubirun's launcher, written by tools/fast-launcher.py: no `site` at start-up.
import sys
sys.path[0:1] = {paths!r}
from kubirun.cli import main
main()
"""


def main() -> None:
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bindir = os.path.dirname(sys.executable)
    paths = [checkout, sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    paths = list(dict.fromkeys(paths))
    target = os.path.join(bindir, "kubirun")
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(LAUNCHER.format(python=sys.executable, paths=paths))
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


if __name__ == "__main__":
    main()
