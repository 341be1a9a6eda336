"""``avwap``: the operator's command line. Errors are one clear line and a non-zero exit."""

from __future__ import annotations

import importlib
import pkgutil

import typer
from pydantic import ValidationError

import avwap.commands as commands_pkg

app = typer.Typer(name="avwap", help="Deterministic, fail-closed Anchored-VWAP swing trading.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _register() -> None:
    """Mount every ``avwap.commands.<module>.app`` (each module owns its commands)."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands_pkg.__path__)):
        module = importlib.import_module(f"avwap.commands.{mod}")
        sub = getattr(module, "app", None)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub)


@app.callback()
def _fresh_settings() -> None:
    """Each invocation reads the environment afresh (one process runs several in tests and in ``avwap demo``)."""
    from shared.settings import get_settings

    get_settings.cache_clear()


_register()


def main() -> int:
    try:
        rc = app(standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except ValidationError:  # the environment does not validate: the service's one-line refusal
        from shared.settings import settings_problems

        problems = "; ".join(settings_problems()) or "the settings did not validate"
        typer.echo(f"avwap: error: invalid settings: {problems}", err=True)
        return 2
    except Exception as exc:  # click usage errors and anything unexpected: one line
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click/typer usage errors
            exc.show()
            return int(exc.exit_code)
        typer.echo(f"avwap: error: {type(exc).__name__}: {exc}", err=True)
        return 1
    return rc if isinstance(rc, int) else 0
