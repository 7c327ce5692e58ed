"""One module per ``bigviz`` verb (the memray layout); :mod:`bigviz.cli` wires them.

Each module has ``add_parser(subparsers)``, which registers the verb with its options,
help and examples, and a ``run(args) -> int`` that calls the core and prints.
"""
