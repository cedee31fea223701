"""``python -m udas_ray.data.scenes``: generate the embedded benchmark (see :mod:`.cli`)."""

import sys

from udas_ray.data.scenes.cli import main

if __name__ == "__main__":
    sys.exit(main())
