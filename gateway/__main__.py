"""`python -m gateway keygen ...` (a new signing key) or `python -m gateway serve` (gunicorn, as in the chart)."""
import os
import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["keygen"]:
        from .keygen import main as keygen
        return keygen(argv[1:])
    if argv[:1] == ["serve"]:
        here = os.path.dirname(os.path.abspath(__file__))
        bind = os.environ.get("BIND", "127.0.0.1:8443")
        os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--config", os.path.join(here, "gunicorn_conf.py"),
                                   "--bind", bind, "gateway.wsgi:app", *argv[1:]])
    sys.stderr.write("usage: python -m gateway keygen [--namespace NS] [--name SECRET] | python -m gateway serve\n")
    return 2


sys.exit(main())
