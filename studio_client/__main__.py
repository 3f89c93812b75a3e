from studio_client.cli.main import main

raise SystemExit(main())
