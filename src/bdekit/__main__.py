"""``python -m bdekit``: the command line (see :mod:`bdekit.cli.entry`)."""

from bdekit.cli.entry import main

if __name__ == "__main__":
    main()
