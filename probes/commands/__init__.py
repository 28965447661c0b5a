"""`interp` commands whose workflows live in probes; interp.cli registers them by name."""
