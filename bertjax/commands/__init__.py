"""The `python -m bertjax <command>` entry points, one module per command.

Commands are leaves: they parse flags, call the library and print. Nothing in bertjax
imports this package (bertjax/__main__.py loads a command by name); the library code
they call lives in the modules named in each docstring.
"""
