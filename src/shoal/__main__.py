"""``python -m shoal``: the same as the ``shoal`` command (``shoal up`` starts its nodes this way)."""

from shoal.cli.main import main

if __name__ == "__main__":
    main()
