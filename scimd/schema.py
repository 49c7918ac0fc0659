"""Attribute definitions of RFC 7643 as data: the single source of truth for validation,
filtering, projection, PATCH and the /Schemas and /ResourceTypes documents.

Every lookup here is case-insensitive (RFC 7644 §3.10: attribute names and URNs are case
insensitive); the definitions carry the canonical case used in responses.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SPC_URN = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_URN = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"

# Types (RFC 7643 §2.3).
STRING, BOOLEAN, DECIMAL, INTEGER = "string", "boolean", "decimal", "integer"
DATETIME, BINARY, REFERENCE, COMPLEX = "dateTime", "binary", "reference", "complex"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute or sub-attribute and its characteristics (RFC 7643 §2.2, §7)."""

    name: str
    type: str = STRING
    description: str = ""
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    sub_attributes: tuple[Attribute, ...] = ()
    _by_key: dict[str, Attribute] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update({sub.name.lower(): sub for sub in self.sub_attributes})

    def sub(self, name: str) -> Attribute | None:
        """The sub-attribute called `name`, any case."""
        return self._by_key.get(name.lower())

    @property
    def read_only(self) -> bool:
        return self.mutability == "readOnly"

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
        }
        if self.type in (STRING, REFERENCE, BINARY):
            doc["caseExact"] = self.case_exact
        if self.canonical_values:
            doc["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        doc.update(mutability=self.mutability, returned=self.returned, uniqueness=self.uniqueness)
        if self.sub_attributes:
            doc["subAttributes"] = [sub.to_json() for sub in self.sub_attributes]
        return doc


@dataclass(frozen=True, slots=True)
class Schema:
    """A schema (RFC 7643 §7): a URN and its top-level attributes."""

    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]
    _by_key: dict[str, Attribute] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update({attr.name.lower(): attr for attr in self.attributes})

    def attribute(self, name: str) -> Attribute | None:
        return self._by_key.get(name.lower())

    def to_json(self, base_url: str) -> dict[str, object]:
        return {
            "schemas": [SCHEMA_URN],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [attr.to_json() for attr in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/scim/v2/Schemas/{self.id}"},
        }


def _str(name: str, description: str, **kw: object) -> Attribute:
    return Attribute(name, STRING, description, **kw)  # type: ignore[arg-type]


def _multi(name: str, description: str, subs: tuple[Attribute, ...], **kw: object) -> Attribute:
    return Attribute(name, COMPLEX, description, multi_valued=True, sub_attributes=subs, **kw)  # type: ignore[arg-type]


def _typed_value_subs(value_desc: str, types: tuple[str, ...], value_type: str = STRING,
                      ref_types: tuple[str, ...] = ()) -> tuple[Attribute, ...]:
    """value/display/type/primary, the shape most multi-valued attributes share (RFC 7643 §2.4)."""
    return (
        Attribute("value", value_type, value_desc, reference_types=ref_types),
        _str("display", "A human-readable name, primarily used for display purposes."),
        _str("type", "A label indicating the attribute's function.", canonical_values=types),
        Attribute("primary", BOOLEAN, "A Boolean value indicating the 'primary' or preferred attribute value."),
    )


# Common attributes (RFC 7643 §3.1). Not listed in /Schemas (RFC 7643 §8.7.1 leaves them out) but
# resolvable in filters, sorting and projection like any other attribute.
ID = Attribute("id", STRING, "Unique identifier for the SCIM resource, assigned by the service provider.",
               case_exact=True, mutability="readOnly", returned="always", uniqueness="server")
EXTERNAL_ID = Attribute("externalId", STRING, "An identifier for the resource as defined by the provisioning client.",
                        case_exact=True)
META = Attribute("meta", COMPLEX, "Resource metadata.", mutability="readOnly", sub_attributes=(
    _str("resourceType", "The name of the resource type of the resource.", case_exact=True, mutability="readOnly"),
    Attribute("created", DATETIME, "The date and time the resource was added.", mutability="readOnly"),
    Attribute("lastModified", DATETIME, "The most recent date and time the resource was modified.",
              mutability="readOnly"),
    Attribute("location", REFERENCE, "The URI of the resource being returned.", case_exact=True,
              mutability="readOnly", reference_types=("uri",)),
    _str("version", "The version (ETag) of the resource.", case_exact=True, mutability="readOnly"),
))
# `schemas` is computed (the core schema, plus each extension the resource has data for); it is
# defined here so that filters such as `schemas eq "urn:...:enterprise:2.0:User"` resolve (RFC 7644 §3.4.2.2).
SCHEMAS_ATTRIBUTE = Attribute("schemas", REFERENCE, "The schemas of the resource.", multi_valued=True,
                              mutability="readOnly", returned="always", reference_types=("uri",))
COMMON = Schema("common", "Common", "Attributes common to all resources (RFC 7643 §3.1).",
                (ID, EXTERNAL_ID, META, SCHEMAS_ATTRIBUTE))

_EMAIL_TYPES = ("work", "home", "other")
_PHONE_TYPES = ("work", "home", "mobile", "fax", "pager", "other")

USER = Schema(USER_URN, "User", "User Account", (
    _str("userName", "Unique identifier for the User, typically used by the user to directly authenticate.",
         required=True, uniqueness="server"),
    Attribute("name", COMPLEX, "The components of the user's real name.", sub_attributes=(
        _str("formatted", "The full name, including all middle names, titles, and suffixes, formatted for display."),
        _str("familyName", "The family name of the User, or last name."),
        _str("givenName", "The given name of the User, or first name."),
        _str("middleName", "The middle name(s) of the User."),
        _str("honorificPrefix", "The honorific prefix(es) of the User, or title."),
        _str("honorificSuffix", "The honorific suffix(es) of the User, or suffix."),
    )),
    _str("displayName", "The name of the User, suitable for display to end-users."),
    _str("nickName", "The casual way to address the user in real life."),
    Attribute("profileUrl", REFERENCE, "A fully qualified URL pointing to a page representing the User's online profile.",
              reference_types=("external",)),
    _str("title", "The user's title, such as \"Vice President\"."),
    _str("userType", "Used to identify the relationship between the organization and the user."),
    _str("preferredLanguage", "Indicates the User's preferred written or spoken language."),
    _str("locale", "Used to indicate the User's default location for purposes of localizing items."),
    _str("timezone", "The User's time zone in the 'Olson' time zone database format."),
    Attribute("active", BOOLEAN, "A Boolean value indicating the User's administrative status."),
    _str("password", "The User's cleartext password, write-only.", mutability="writeOnly", returned="never"),
    _multi("emails", "Email addresses for the user.",
           _typed_value_subs("Email addresses for the user.", _EMAIL_TYPES)),
    _multi("phoneNumbers", "Phone numbers for the User.",
           _typed_value_subs("Phone number of the User.", _PHONE_TYPES)),
    _multi("ims", "Instant messaging addresses for the User.", _typed_value_subs(
        "Instant messaging address for the User.", ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"))),
    _multi("photos", "URLs of photos of the User.",
           _typed_value_subs("URL of a photo of the User.", ("photo", "thumbnail"), REFERENCE, ("external",))),
    _multi("addresses", "A physical mailing address for this User.", (
        _str("formatted", "The full mailing address, formatted for display or use with a mailing label."),
        _str("streetAddress", "The full street address component."),
        _str("locality", "The city or locality component."),
        _str("region", "The state or region component."),
        _str("postalCode", "The zip code or postal code component."),
        _str("country", "The country name component."),
        _str("type", "A label indicating the attribute's function.", canonical_values=("work", "home", "other")),
        Attribute("primary", BOOLEAN, "A Boolean value indicating the 'primary' or preferred address."),
    )),
    _multi("groups", "A list of groups to which the user belongs.", (
        _str("value", "The identifier of the User's group.", mutability="readOnly"),
        Attribute("$ref", REFERENCE, "The URI of the corresponding 'Group' resource.", mutability="readOnly",
                  reference_types=("User", "Group")),
        _str("display", "A human-readable name, primarily used for display purposes.", mutability="readOnly"),
        _str("type", "A label indicating the membership: 'direct' or 'indirect'.", mutability="readOnly",
             canonical_values=("direct", "indirect")),
    ), mutability="readOnly"),
    _multi("entitlements", "A list of entitlements for the User.",
           _typed_value_subs("The value of an entitlement.", ())),
    _multi("roles", "A list of roles for the User.", _typed_value_subs("The value of a role.", ())),
    _multi("x509Certificates", "A list of certificates issued to the User.",
           _typed_value_subs("The value of an X.509 certificate.", (), BINARY)),
))

GROUP = Schema(GROUP_URN, "Group", "Group", (
    _str("displayName", "A human-readable name for the Group.", required=True, uniqueness="server"),
    _multi("members", "A list of members of the Group.", (
        _str("value", "Identifier of the member of this Group.", case_exact=True, mutability="immutable"),
        Attribute("$ref", REFERENCE, "The URI corresponding to a SCIM resource that is a member of this Group.",
                  mutability="immutable", reference_types=("User", "Group")),
        _str("display", "A human-readable name for the member.", mutability="readOnly"),
        _str("type", "A label indicating the type of resource, e.g., 'User' or 'Group'.", mutability="immutable",
             canonical_values=("User", "Group")),
    )),
))

ENTERPRISE = Schema(ENTERPRISE_URN, "EnterpriseUser", "Enterprise User", (
    _str("employeeNumber", "Numeric or alphanumeric identifier assigned to a person."),
    _str("costCenter", "Identifies the name of a cost center."),
    _str("organization", "Identifies the name of an organization."),
    _str("division", "Identifies the name of a division."),
    _str("department", "Identifies the name of a department."),
    Attribute("manager", COMPLEX, "The User's manager.", sub_attributes=(
        _str("value", "The id of the SCIM resource representing the User's manager.", case_exact=True),
        Attribute("$ref", REFERENCE, "The URI of the SCIM resource representing the User's manager.",
                  reference_types=("User",)),
        _str("displayName", "The displayName of the User's manager.", mutability="readOnly"),
    )),
))


def _ro(name: str, type_: str = STRING, description: str = "", **kw: object) -> Attribute:
    """A read-only attribute of the service provider's own schemas (RFC 7643 §5-§7)."""
    return Attribute(name, type_, description, mutability="readOnly", **kw)  # type: ignore[arg-type]


def _supported(name: str, description: str, *extra: Attribute) -> Attribute:
    return _ro(name, COMPLEX, description, required=True, sub_attributes=(
        _ro("supported", BOOLEAN, "A Boolean value specifying whether or not the operation is supported.",
            required=True), *extra))


_ATTRIBUTE_CHARACTERISTICS: tuple[Attribute, ...] = (
    _ro("name", description="The attribute's name.", required=True, case_exact=True),
    _ro("type", description="The attribute's data type.", required=True,
        canonical_values=(STRING, COMPLEX, BOOLEAN, DECIMAL, INTEGER, DATETIME, REFERENCE, BINARY)),
    _ro("multiValued", BOOLEAN, "A Boolean value indicating an attribute's plurality.", required=True),
    _ro("description", description="A human-readable description of the attribute."),
    _ro("required", BOOLEAN, "A Boolean value indicating whether or not the attribute is required."),
    _ro("canonicalValues", description="A collection of canonical values.", multi_valued=True, case_exact=True),
    _ro("caseExact", BOOLEAN, "A Boolean value indicating whether or not a string attribute is case sensitive."),
    _ro("mutability", description="Indicates whether or not an attribute is modifiable.", case_exact=True,
        canonical_values=("readOnly", "readWrite", "immutable", "writeOnly")),
    _ro("returned", description="Indicates when an attribute is returned in a response.", case_exact=True,
        canonical_values=("always", "never", "default", "request")),
    _ro("uniqueness", description="Indicates how unique a value must be.", case_exact=True,
        canonical_values=("none", "server", "global")),
    _ro("referenceTypes", description="Indicates the types of resources that may be referenced.",
        multi_valued=True, case_exact=True),
)

# The service provider's own schemas, published as RFC 7643 §8.7.2 represents them.
# `name` is free text; RFC 7643 §8.7.2 writes "Service Provider Configuration", clients such as
# scim2-tester look for the resource type's name, so that is the one given.
SERVICE_PROVIDER_CONFIG = Schema(SPC_URN, "ServiceProviderConfig",
                                 "Schema for representing the service provider's configuration", (
    _ro("documentationUri", REFERENCE, "An HTTP-addressable URL pointing to the service provider's documentation.",
        reference_types=("external",)),
    _supported("patch", "A complex type that specifies PATCH configuration options."),
    _supported("bulk", "A complex type that specifies bulk configuration options.",
               _ro("maxOperations", INTEGER, "An integer value specifying the maximum number of operations.",
                   required=True),
               _ro("maxPayloadSize", INTEGER, "An integer value specifying the maximum payload size in bytes.",
                   required=True)),
    _supported("filter", "A complex type that specifies FILTER options.",
               _ro("maxResults", INTEGER, "The maximum number of resources returned in a response.", required=True)),
    _supported("changePassword", "A complex type that specifies configuration options related to changing a password."),
    _supported("sort", "A complex type that specifies sort result options."),
    _supported("etag", "A complex type that specifies ETag configuration options."),
    _ro("pagination", COMPLEX, "Pagination options (RFC 9865 §4).", sub_attributes=(
        _ro("cursor", BOOLEAN, "Whether cursor-based pagination is supported."),
        _ro("index", BOOLEAN, "Whether index-based pagination is supported."),
        _ro("defaultPaginationMethod", description="The method used when a request names none.",
            canonical_values=("cursor", "index")),
        _ro("defaultPageSize", INTEGER, "The page size when a request names no count."),
        _ro("maxPageSize", INTEGER, "The largest page size."),
        _ro("cursorTimeout", INTEGER, "Seconds a cursor stays valid."),
    )),
    _ro("authenticationSchemes", COMPLEX, "A complex type that specifies supported authentication scheme properties.",
        required=True, multi_valued=True, sub_attributes=(
            _ro("type", description="The authentication scheme.", required=True),
            _ro("name", description="The common authentication scheme name.", required=True),
            _ro("description", description="A description of the authentication scheme.", required=True),
            _ro("specUri", REFERENCE, "An HTTP-addressable URL pointing to the specification.",
                reference_types=("external",)),
            _ro("documentationUri", REFERENCE, "An HTTP-addressable URL pointing to the documentation.",
                reference_types=("external",)),
            _ro("primary", BOOLEAN, "Whether this is the preferred authentication scheme."),
        )),
))

RESOURCE_TYPE_SCHEMA = Schema(RESOURCE_TYPE_URN, "ResourceType",
                              "Specifies the schema that describes a SCIM resource type", (
    _ro("id", description="The resource type's server unique id.", case_exact=True),
    _ro("name", description="The resource type name.", required=True),
    _ro("description", description="The resource type's human-readable description."),
    _ro("endpoint", REFERENCE, "The resource type's HTTP-addressable endpoint relative to the Base URL.",
        required=True, reference_types=("uri",)),
    _ro("schema", REFERENCE, "The resource type's primary/base schema URI.", required=True, case_exact=True,
        reference_types=("uri",)),
    _ro("schemaExtensions", COMPLEX, "A list of URIs of the resource type's schema extensions.", multi_valued=True,
        sub_attributes=(
            _ro("schema", REFERENCE, "The URI of a schema extension.", required=True, case_exact=True,
                reference_types=("uri",)),
            _ro("required", BOOLEAN, "Whether a schema extension is required for the resource type.",
                required=True),
        )),
))

SCHEMA_SCHEMA = Schema(SCHEMA_URN, "Schema", "Specifies the schema attribute structure", (
    _ro("id", description="The unique URI of the schema.", required=True, case_exact=True),
    _ro("name", description="The schema's human-readable name."),
    _ro("description", description="The schema's human-readable description."),
    _ro("attributes", COMPLEX, "A complex attribute that includes the attributes of a schema.", required=True,
        multi_valued=True, sub_attributes=(
            *_ATTRIBUTE_CHARACTERISTICS,
            _ro("subAttributes", COMPLEX, "Used to define the sub-attributes of a complex attribute.",
                multi_valued=True, sub_attributes=_ATTRIBUTE_CHARACTERISTICS),
        )),
))

# Resource schemas (usable by resources) and every schema /Schemas publishes.
SCHEMAS: dict[str, Schema] = {s.id.lower(): s for s in (USER, GROUP, ENTERPRISE)}
PUBLISHED_SCHEMAS: dict[str, Schema] = {
    s.id.lower(): s for s in (USER, GROUP, ENTERPRISE, SERVICE_PROVIDER_CONFIG, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA)}


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A resource type (RFC 7643 §6): its core schema and schema extensions."""

    name: str
    endpoint: str
    description: str
    core: Schema
    extensions: tuple[Schema, ...] = ()

    @property
    def schemas(self) -> tuple[Schema, ...]:
        return (self.core, *self.extensions)

    def extension(self, urn: str) -> Schema | None:
        return next((ext for ext in self.extensions if ext.id.lower() == urn.lower()), None)

    def schema_for_urn(self, urn: str) -> Schema | None:
        """The core schema or an extension named by `urn`, any case."""
        if urn.lower() == self.core.id.lower():
            return self.core
        return self.extension(urn)

    def resolve(self, urn: str | None, name: str) -> tuple[Schema, Attribute] | None:
        """Find a top-level attribute, optionally qualified by a schema URN (RFC 7644 §3.10)."""
        if urn is not None:
            schema = self.schema_for_urn(urn)
            if schema is None:
                return None
            attr = schema.attribute(name) or (COMMON.attribute(name) if schema is self.core else None)
            return (schema, attr) if attr else None
        # Unqualified names are core attributes first; an extension attribute named without its
        # URN (Entra's `manager eq "id"`, idp-dialects E15) is found in the extensions next.
        for schema in (COMMON, self.core, *self.extensions):
            attr = schema.attribute(name)
            if attr:
                return schema, attr
        return None

    def to_json(self, base_url: str) -> dict[str, object]:
        return {
            "schemas": [RESOURCE_TYPE_URN],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.core.id,
            "schemaExtensions": [{"schema": ext.id, "required": False} for ext in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/scim/v2/ResourceTypes/{self.name}"},
        }


USER_TYPE = ResourceType("User", "/Users", "User Account", USER, (ENTERPRISE,))
GROUP_TYPE = ResourceType("Group", "/Groups", "Group", GROUP)
RESOURCE_TYPES: dict[str, ResourceType] = {"user": USER_TYPE, "group": GROUP_TYPE}


def split_urn(path: str) -> tuple[str | None, str]:
    """Split `urn:...:User:name.sub` into its schema URN and the rest (RFC 7644 §3.10).

    The URN itself contains dots (`:2.0:`), so the split is at the last colon, never at a dot.
    A bare URN of a known schema (a whole extension) returns (urn, "").
    """
    if not path.lower().startswith("urn:"):
        return None, path
    if path.lower() in SCHEMAS:
        return path, ""
    urn, _, rest = path.rpartition(":")
    return urn, rest


def fold_case(text: str) -> str:
    """The comparison key of a caseExact=false string: NFC, then full Unicode case folding.

    SQLite's NOCASE, lower() and LIKE fold ASCII only, so keys are computed here (pitfalls: SQLite).
    """
    return unicodedata.normalize("NFC", text).casefold()


def format_datetime(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and `Z`, fixed width so text order is chronological."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(text: str) -> datetime:
    """Parse an xsd:dateTime (RFC 7643 §2.3.5): `Z` or an offset, any number of fractional digits.

    A value without an offset is taken as UTC. Raises ValueError.
    """
    head, dot, rest = text.strip().partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise ValueError(f"bad fractional seconds in {text!r}")
        rest = rest[:digits][:6].ljust(6, "0") + rest[digits:]
        text = f"{head}.{rest}"
    moment = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    if len(head) < 19 or head[10] not in "Tt":
        raise ValueError(f"not a dateTime: {text!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def now() -> str:
    return format_datetime(datetime.now(timezone.utc))
