"""SCIM errors (RFC 7644 §3.12): one class per HTTP status / scimType, free of any web framework.

The HTTP layer renders a ScimError as the Error body; the core raises them.
"""

from __future__ import annotations

ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    """An error the client should see: HTTP status, optional scimType (RFC 7644 Table 9), detail."""

    status: int = 400
    scim_type: str | None = None
    default_detail = "Bad request."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.headers = headers or {}
        super().__init__(self.detail)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"schemas": [ERROR_URN], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class InvalidFilter(ScimError):
    scim_type = "invalidFilter"
    default_detail = "The specified filter syntax is invalid or the attribute and comparison combination is not supported."


class TooMany(ScimError):
    scim_type = "tooMany"
    default_detail = "The filter yields too many results."


class Uniqueness(ScimError):
    status = 409
    scim_type = "uniqueness"
    default_detail = "One or more of the attribute values are already in use or are reserved."


class Mutability(ScimError):
    scim_type = "mutability"
    default_detail = "The attempted modification is not compatible with the target attribute's mutability."


class InvalidSyntax(ScimError):
    scim_type = "invalidSyntax"
    default_detail = "The request body message structure was invalid."


class InvalidPath(ScimError):
    scim_type = "invalidPath"
    default_detail = "The path attribute was invalid or malformed."


class NoTarget(ScimError):
    scim_type = "noTarget"
    default_detail = "The specified path did not yield an attribute or attribute value that could be operated on."


class InvalidValue(ScimError):
    scim_type = "invalidValue"
    default_detail = "A required value was missing, or the value specified was not compatible."


class InvalidVersion(ScimError):
    status = 412
    scim_type = "invalidVers"
    default_detail = "The specified version number does not match the resource's latest version number."


class InvalidCursor(ScimError):
    """RFC 9865 §6: the cursor is invalid (tampered, unknown)."""

    scim_type = "invalidCursor"
    default_detail = "The cursor value is invalid."


class ExpiredCursor(ScimError):
    """RFC 9865 §6: the cursor has expired."""

    scim_type = "expiredCursor"
    default_detail = "The cursor value has expired."


class Sensitive(ScimError):
    status = 403
    scim_type = "sensitive"
    default_detail = "The request cannot be completed because sensitive information would be exposed in the URI."


class Unauthorized(ScimError):
    status = 401
    default_detail = "Authorization failure: a valid bearer token is required."


class NotFound(ScimError):
    status = 404
    default_detail = "Resource not found."


class MethodNotAllowed(ScimError):
    status = 405
    default_detail = "The HTTP method is not allowed on this endpoint."


class NotModified(ScimError):
    status = 304
    default_detail = "Not modified."


class PayloadTooLarge(ScimError):
    status = 413
    default_detail = "The request body is too large."


class UnsupportedMediaType(ScimError):
    status = 415
    default_detail = "Request bodies must be application/scim+json or application/json."


class TooManyRequests(ScimError):
    status = 429
    default_detail = "Too many requests: slow down."


class InternalError(ScimError):
    status = 500
    default_detail = "Internal server error."


class Unavailable(ScimError):
    status = 503
    default_detail = "The service is temporarily unavailable."
