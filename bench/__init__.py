"""``make bench``: chatrelay's own benchmark (see ``python -m bench.run --help``)."""
