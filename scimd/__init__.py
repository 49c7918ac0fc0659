"""scimd: a SCIM 2.0 server (RFC 7643, RFC 7644, RFC 9865) on SQLite."""

__version__ = "0.1.0"
