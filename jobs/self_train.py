"""The console script ``udas-train`` run from a checkout: python jobs/self_train.py [options] (udas_ray/commands/self_train.py)."""

import sys

from udas_ray.commands.self_train import main

if __name__ == "__main__":
    sys.exit(main())
