"""Direct Line token service: the core, free of azure.functions."""

# Written for every Python that may import it, so that an older one gets this line, not a traceback
# from the first module that needs 3.11 (wsgiref.types, say): no annotations here.
import sys

if sys.version_info < (3, 11):  # noqa: UP036 - the point: older Pythons read this file too
    _TOO_OLD = (
        f"This service needs Python 3.11 or newer (3.11, 3.12 or 3.13), and this is Python "
        f"{sys.version_info[0]}.{sys.version_info[1]}: install one (https://www.python.org/downloads/, "
        "`pyenv install 3.11`, or `py -3.11` on Windows) and create the virtual environment with it, "
        "e.g. python3.11 -m venv .venv"
    )
    if sys.argv[:1] == ["-m"]:  # python -m tokens ...: one line, exit status 1
        sys.exit(_TOO_OLD)
    raise ImportError(_TOO_OLD)
