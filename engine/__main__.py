import sys

from charrnn_tui.engine.cli.main import main

sys.exit(main())
