from tl_core.cli import main

raise SystemExit(main())
