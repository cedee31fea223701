"""What every entry point in ``jobs/`` shares: ``--config FILE key=value ...`` and one-line errors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from udas_ray.config import Config, load_config
from udas_ray.errors import UdasError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "default.yaml"


def parser(description: str, default_config: Path | None = DEFAULT_CONFIG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=str(default_config) if default_config else None,
                   help=f"YAML config (default: {default_config})")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, values parsed as YAML, e.g. loss.lambda_adv=0.01")
    return p


def config_from(args) -> Config:
    return load_config(args.config, args.overrides)


def entry_point(main):
    """Run ``main``; a UdasError becomes ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapped(argv=None):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            return main(argv)
        except UdasError as exc:
            exc = getattr(exc, "cause", None) or exc  # raised inside a Ray actor or task
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapped
