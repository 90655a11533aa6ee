"""Queue a thumbnail pipeline for each image named on the command line."""

from __future__ import annotations

import sys
from pathlib import Path

from .tasks import app, make_thumbnail

if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: pipeline started, first job {make_thumbnail(str(Path(name).resolve()))}")
    app.close()
