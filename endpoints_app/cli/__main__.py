from endpoints_app.cli.main import main

raise SystemExit(main())
