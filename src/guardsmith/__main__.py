"""``python -m guardsmith ...``: the ``guardsmith`` command (e.g. ``python -m guardsmith deploy upload``)."""
from guardsmith.cli import run

run()
