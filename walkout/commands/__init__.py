"""One module per ``walkout`` verb; see :mod:`walkout.cli`."""
