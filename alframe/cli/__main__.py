"""``python -m alframe.cli``: the ``alframe`` command."""

from alframe.cli.run import main

if __name__ == "__main__":
    main()
