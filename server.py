"""Start the idv verification node with the embedded defaults: `python server.py [--port N]`.

Same as `idv serve`; settings come from IDV_* environment variables and an
optional --config TOML file (see `idv config show`).
"""

import sys

from idv.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
