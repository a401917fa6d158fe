import os
import sys

# OpenBLAS's worker threads spin beside CTranslate2's on the same cores; numpy's matrix work here
# (the speaker encoder's, resampling's) is small: one thread each, unless the operator says so.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stt.cli import main

sys.exit(main())
