"""`mvla-sim` command line: a thin click layer over library functions usable from Python too."""

from __future__ import annotations

import sys

import click

from mobile_vla_sim import __version__


class UserError(click.ClickException):
    """A one-line error that tells the user what is wrong and how to fix it."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mvla-sim")
def main() -> None:
    """Evaluate vision-language-action policies for a mobile robot in simulation."""


# --- generate ---------------------------------------------------------------------------------
# (section owned by the datasets work)

# --- train ------------------------------------------------------------------------------------
# (section owned by the policies work)

# --- eval / train-rl ---------------------------------------------------------------------------
# (section owned by the evaluation work)

# --- compare ----------------------------------------------------------------------------------
# (section owned by the comparison work)

# --- quickstart -------------------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(main())
