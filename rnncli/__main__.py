"""`python -m rnncli` is the `rnncli` command."""

from .cli import main

main(prog_name="rnncli")
