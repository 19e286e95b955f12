"""`python -m edge` is the same as the `edge-gateway` console script."""

from edge.cli import main

raise SystemExit(main())
