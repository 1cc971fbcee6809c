"""Sub-commands of the ``vppkit`` console command.

Each module in this package defines ``register(subparsers)`` which adds one or more sub-commands
(``argparse`` parsers with ``set_defaults(func=...)``). :mod:`vppkit.cli` discovers the modules, so
adding a command never touches a shared file.
"""
