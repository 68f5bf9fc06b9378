"""``python -m carebox``: the same as the ``carebox`` command."""

if __name__ == "__main__":  # guarded: worker processes import the main module of their parent
    from carebox.cli import main

    raise SystemExit(main())
