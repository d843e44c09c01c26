"""`python -m wassette_state` runs the CLI."""

from wassette_state.cli.main import main

if __name__ == "__main__":
    main()
