"""`python -m pytrim <command> ...` (or `pytrim <command>`): every pytrim command, without the
repository's tools/ folder. `python -m pytrim --help` lists the commands."""

from pytrim.cli import main

if __name__ == "__main__":
    main()
