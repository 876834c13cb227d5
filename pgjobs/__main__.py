"""`python -m pgjobs`: the same command line as the `pgjobs` script."""

from pgjobs.cli import main

if __name__ == "__main__":
    main()
