"""The console script ``udas-budgets`` run from a checkout: python jobs/data_dependency.py [options] (udas_ray/commands/data_dependency.py)."""

import sys

from udas_ray.commands.data_dependency import main

if __name__ == "__main__":
    sys.exit(main())
