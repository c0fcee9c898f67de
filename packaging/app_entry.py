"""The frozen app's entry point (PyInstaller, packaging/build_app.py): the same as ``studio``,
the window without arguments and the command line with a subcommand."""

import multiprocessing
import sys

from studio.__main__ import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes of a frozen app start through this file
    sys.exit(main())
