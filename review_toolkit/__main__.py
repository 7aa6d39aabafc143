"""``python -m review_toolkit`` and ``accelerate launch -m review_toolkit`` run the CLI."""

from review_toolkit.cli import main

if __name__ == "__main__":
    main()
