"""The ``flowrunner`` command (also ``python -m flowrunner``).

The command-line module is imported here, inside a guard: a Ctrl-C that lands while
the imports run (the first tenth of a second) ends the command with exit code 130 and
no traceback, like a Ctrl-C at any later moment. Output still buffered when the command
ends is flushed inside a guard too: a reader that went away (``| head``) ends the
command quietly with exit code 1, as it does while the command runs.
"""

import sys

EXIT_INTERRUPTED = 130


def entry() -> None:
    try:
        from flowrunner.cli.main import main

        main()
    except KeyboardInterrupt:  # one that escaped the command's own handling
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        _flush()  # here, not at exit, where a closed pipe would print a warning
        raise


def _flush() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        from flowrunner.cli.common import closed_output, output_closed

        if closed_output(exc):
            output_closed()


if __name__ == "__main__":
    entry()
