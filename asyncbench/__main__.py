"""`python -m asyncbench`, and the console script's entry point.

A Ctrl-C or SIGTERM from the first moment exits 130 with the message: the handler is set before
the command line's modules (typer, rich) are imported, which takes a good part of a second.
"""

import os
import signal
import sys


def _early(signum: int, frame: object) -> None:
    os.write(2, b"asyncbench: interrupted\n")
    os._exit(130)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _early)
    if sys.argv[1:] == ["--version"]:
        # Answered before the command line is built: that imports every experiment's options.
        from asyncbench.version import __version__

        print(f"asyncbench {__version__}")
        return
    from asyncbench.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
