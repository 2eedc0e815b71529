"""Face verification accuracy and the manifest thresholds: see idv/evaluation/verification_run.py.

    .venv/bin/python benchmarks/accuracy/verification_eval.py --mirror ../shared/models
"""

import sys

from idv.evaluation.verification_run import main

if __name__ == "__main__":
    sys.exit(main())
