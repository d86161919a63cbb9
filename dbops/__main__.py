"""`python -m dbops ...`"""

from dbops.cli import main

raise SystemExit(main())
