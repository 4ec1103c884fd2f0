from n2n_core.cli import main

raise SystemExit(main())
