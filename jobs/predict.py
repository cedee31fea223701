"""The console script ``udas-predict`` run from a checkout: python jobs/predict.py [options] (udas_ray/commands/predict.py)."""

import sys

from udas_ray.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
