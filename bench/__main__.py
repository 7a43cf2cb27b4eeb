"""`python -m bench` (or `make bench`): chatnet and ngircd under the same load."""

from bench.cli import main

if __name__ == "__main__":
    main()
