"""What every script shares: config flags, and bad input turned into one line and exit code 2."""

import os
import sys
from collections.abc import Callable

from jaxcnn.errors import UserError

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs")


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; a UserError (or a bad flag) prints one line and exits with code 2.

    `--debug` anywhere on the command line shows the full traceback instead.
    """
    argv = list(sys.argv if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)
    try:
        sys.exit(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure becomes one actionable line
        if debug:
            raise
        msg = _one_line(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def _quiet_closed_loop(hook):
    """Drop `RuntimeError: Event loop is closed`, which TensorStore's callbacks report (as
    unraisable, one traceback per array) once Orbax has closed the event loop of a save or
    restore that failed: the run reports that failure itself, in one line. Everything else
    goes to `hook`."""
    def quiet(unraisable):
        e = unraisable.exc_value
        if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            hook(unraisable)
    return quiet


def _one_line(e: Exception) -> str | None:
    from absl import flags
    if isinstance(e, UserError):
        return " ".join(str(e).split())  # one line, whatever the message's source embedded
    if isinstance(e, flags.Error):
        return str(e).splitlines()[0] + " (see --help)"
    return None


def check_overrides(argv: list[str]) -> None:
    """Refuse `--config.<field>=v` for fields the schema does not know, before absl sees them."""
    from jaxcnn.config import _paths, default_config
    known = set(_paths(default_config()))
    for a in argv:
        if a.startswith("--config."):
            field = a[len("--config."):].split("=", 1)[0]
            if field not in known:
                raise UserError(f"unknown config field {field!r} in {a}: see jaxcnn/config.py "
                                "for the fields a run understands")


def define_config_flag(default: str) -> None:
    """`--config path/to/config.py` plus `--config.<group>.<field>=<value>` overrides."""
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", default, "config file (a get_config() module)",
                                    lock_config=True)


def parse(argv: list[str]):
    """Parse absl flags and load the config; a config file that cannot be loaded is a UserError.

    Returns the loaded config (ml_collections loads it lazily, on first access).
    """
    from absl import app, flags
    app.define_help_flags()  # --help, --helpfull
    # Accept --num-processes as well as absl's --num_processes.
    argv = [_underscored(a) if a.startswith("--") and not a.startswith("--config") else a
            for a in argv]
    try:
        flags.FLAGS(argv)
        config = flags.FLAGS.config
        config.keys()  # a config that failed to load is a proxy that raises on first use
        return config
    except OSError as e:
        raise UserError(f"cannot load the config file: {_first_useful(str(e))}; pass an existing "
                        "file, e.g. --config configs/cifar10_cnn.py") from None


def run_workdir(argv: list[str], usage: str) -> str:
    """Parse the flags of a script that takes one saved run; return that run's path.

    Defines `--debug` and the help flags; `usage` ends the error for a wrong argument count.
    """
    from absl import app, flags, logging
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    app.define_help_flags()
    args = flags.FLAGS(argv)[1:]
    if len(args) != 1:
        raise UserError(f"give exactly one run workdir (or checkpoint directory), got "
                        f"{len(args)} arguments: {usage}")
    logging.set_verbosity(logging.ERROR)  # Orbax's warnings are not for users
    return args[0]


def _underscored(arg: str) -> str:
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def _first_useful(msg: str) -> str:
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return next((ln for ln in lines if ln.startswith("[Errno") or "Error" in ln), lines[-1])
