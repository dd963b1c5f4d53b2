"""The ``flowrunner`` command (also ``python -m flowrunner``).

The command-line module is imported here, inside a guard: a Ctrl-C that lands while
the imports run (the first tenth of a second) ends the command with exit code 130 and
no traceback, like a Ctrl-C at any later moment.
"""

import sys

EXIT_INTERRUPTED = 130


def entry() -> None:
    try:
        from flowrunner.cli.main import main

        main()
    except KeyboardInterrupt:  # one that escaped the command's own handling
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    entry()
