"""scimd: a SCIM 2.0 server (RFC 7643, RFC 7644, RFC 9865) on SQLite."""

from pathlib import Path

# One source for the version: pyproject.toml reads the same file (the `scimd.py` launcher would
# shadow the package if setuptools imported it to find the version).
__version__ = (Path(__file__).with_name("VERSION")).read_text(encoding="ascii").strip()
