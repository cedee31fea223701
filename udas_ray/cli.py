"""What every entry point in ``jobs/`` shares: ``--config FILE key=value ...``, ``--print-config``
and one-line errors.

:func:`config_from` is where a config comes into being for a job, so two things happen there and
nowhere else: relative paths (:data:`PATH_KEYS`, a relative ``sqlite:///`` tracking URI) become
absolute against the directory the user typed them in, before a Ray worker or a Tune trial (whose
working directory is its own folder) sees them; and ``--print-config`` prints that final config
and exits, before any data or Ray work.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
from pathlib import Path

from udas_ray.config import Config, config_path, load_config
from udas_ray.paths import absolute_paths
from udas_ray.errors import UdasError

DEFAULT_CONFIG = config_path("default")  # the shipped conf/default.yaml


def parser(description: str, default_config: Path | None = DEFAULT_CONFIG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=str(default_config) if default_config else None,
                   help=f"YAML config (default: {default_config})" if default_config else "YAML config")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, extends:, overrides, absolute paths) as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, values parsed as YAML, e.g. loss.lambda_adv=0.01")
    return p


def config_from(args, path: str | Path | None = None) -> Config:
    """The job's config: ``path`` (default ``args.config``) + ``args.overrides``, then :func:`settle`."""
    return settle(load_config(path if path is not None else args.config, args.overrides), args)


def settle(cfg: Config, args) -> Config:
    """Paths made absolute; with ``args.print_config`` the config is printed and the process exits 0."""
    cfg = absolute_paths(cfg)
    if getattr(args, "print_config", False):
        sys.stdout.write(cfg.to_yaml())
        sys.stdout.flush()
        raise SystemExit(0)
    return cfg


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP (a supervisor, a container, a closed terminal) unwind the process like
    Ctrl-C: ``finally`` blocks and exit hooks run, so what it started (a local Ray, an MLflow
    server) stops with it. Python's default for both ends the process at once, leaving those
    behind. Only the main thread may install handlers; elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def entry_point(main):
    """Run ``main``; a UdasError becomes ``error: <message>`` on stderr and exit status 2;
    SIGTERM and SIGHUP end it as Ctrl-C does (:func:`exit_on_signals`)."""

    @functools.wraps(main)
    def wrapped(argv=None):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        exit_on_signals()
        try:
            return main(argv)
        except UdasError as exc:
            exc = getattr(exc, "cause", None) or exc  # raised inside a Ray actor or task
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapped
