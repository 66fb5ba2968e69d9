"""Entry point for `python -m bench.peers`."""

from bench.peers.cli import main

if __name__ == "__main__":
    main()
