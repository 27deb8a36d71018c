"""The `python -m bertjax <command>` entry points, one module per command.

Commands are leaves: they parse flags, call the library and print. Nothing in bertjax
imports this package (bertjax/__main__.py loads a command by name); the library code
they call lives in the modules named in each docstring (logic only one command uses, as
fill_mask's and evaluate's, lives in that command's module). Each declares a HELP table (the
flags it reads and its docs page; bertjax/commands/flags.py renders `--help` from it) and
imports nothing heavy at module level, so `COMMAND --help` answers before JAX loads.
"""
