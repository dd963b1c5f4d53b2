"""Allow ``python -m flowrunner``."""

from flowrunner.cli import main

if __name__ == "__main__":
    main()
