from triggerd.cli import main

raise SystemExit(main())
