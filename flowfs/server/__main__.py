"""``python -m flowfs.server``: the same as ``flowfs serve``."""

from flowfs.server.cli import main

raise SystemExit(main())
