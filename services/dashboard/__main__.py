from services.dashboard.server import main

raise SystemExit(main())
