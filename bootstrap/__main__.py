"""``python -m bootstrap`` is the same as ``llama-bootstrap``."""

from bootstrap.cli import main

if __name__ == "__main__":
    main()
