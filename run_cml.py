#!/usr/bin/env python
"""Thin entry point; everything lives in cml.cli."""

import sys

from cml.cli import main

if __name__ == "__main__":
    sys.exit(main())
