from antechamber.cli import main

raise SystemExit(main())
