import sys

from stateful_rnn_client.cli import main

sys.exit(main())
