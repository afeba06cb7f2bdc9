from flowfs.cli import main

raise SystemExit(main())
