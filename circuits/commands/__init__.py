"""`interp circuit` commands; interp.cli registers them by name."""
