"""Start Deep Learning Playground: ``python main.py``."""

import sys

from playground.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["gui"]))
