"""Discovery documents (RFC 7644 §4, RFC 7643 §5-§7): ServiceProviderConfig, ResourceTypes, Schemas.

ServiceProviderConfig advertises exactly what this server implements; each flag below is tied
to a feature that is built and tested.
"""

from __future__ import annotations

from typing import Any

from scimd.config import Config
from scimd.schema import LIST_RESPONSE_URN, PUBLISHED_SCHEMAS, RESOURCE_TYPES, SPC_URN

DOCUMENTATION_URI = "https://www.rfc-editor.org/rfc/rfc7644"


def service_provider_config(config: Config) -> dict[str, Any]:
    return {
        "schemas": [SPC_URN],
        "documentationUri": DOCUMENTATION_URI,
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": config.bulk_max_operations,
                 "maxPayloadSize": config.bulk_max_payload},
        "filter": {"supported": True, "maxResults": config.max_results},
        "changePassword": {"supported": True},
        "sort": {"supported": True},
        "etag": {"supported": True},
        # RFC 9865 §4: both pagination methods, index by default.
        "pagination": {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": config.max_results,
            "maxPageSize": config.max_results,
            "cursorTimeout": CURSOR_TIMEOUT_SECONDS,
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token in the Authorization header (RFC 6750).",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": True,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{config.base_url}/scim/v2/ServiceProviderConfig",
        },
    }


CURSOR_TIMEOUT_SECONDS = 3600


def list_response(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [rtype.to_json(base_url) for rtype in RESOURCE_TYPES.values()]


def schemas(base_url: str) -> list[dict[str, Any]]:
    return [schema.to_json(base_url) for schema in PUBLISHED_SCHEMAS.values()]
