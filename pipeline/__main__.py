"""``python -m pipeline ...`` = ``selfalign pipeline ...``; what ``torchrun``/``accelerate launch -m`` start."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
