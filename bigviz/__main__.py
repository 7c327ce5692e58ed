"""``python -m bigviz`` runs the command line (see :mod:`bigviz.cli`)."""

from bigviz.cli import main

raise SystemExit(main())
