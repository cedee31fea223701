"""The console script ``udas-sweep`` run from a checkout: python jobs/sweep.py [options] (udas_ray/commands/sweep.py)."""

import sys

from udas_ray.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
