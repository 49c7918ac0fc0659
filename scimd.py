#!/usr/bin/env python3
"""Launcher so that `python3 scimd.py` works from a checkout (the package shadows this file on import)."""
from scimd.__main__ import main

raise SystemExit(main())
