import sys

from incident_bot.cli import main

sys.exit(main())
