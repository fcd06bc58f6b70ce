"""The seed documents' config examples, copied verbatim (they must load unchanged)."""

SEED_000 = """
        {
        "servers": [
          { "alias": "users", "url": "https://users.example.com" },
          { "alias": "orders", "url": "https://orders.example.com" }
        ],
        "paths": [
          { "method": "GET", "path": "/api/users/{.+}", "integration": { "type": "http_proxy", "server": "users" } },
          { "method": "GET", "path": "/api/orders/{.+}", "integration": { "type": "http_proxy", "server": "orders" } }
        ]
      }
"""

SEED_003_ROUTES = """
{
"routes": [
{
"path": "/api/users/**",
"upstream": "http://users-service:3001",
"strip_prefix": "/api",
"methods": ["GET", "POST", "PUT", "DELETE"]
},
{
"path": "/api/orders/**",
"upstream": "http://orders-service:3002",
"strip_prefix": "/api",
"methods": ["GET", "POST"]
},
{
"path": "/api/products/**",
"upstream": "http://products-service:3003",
"strip_prefix": "/api",
"methods": ["GET"]
}
]
}
"""

SEED_003_AUTH = """
{
"auth": {
"type": "jwt",
"jwks_uri": "https://auth.example.com/.well-known/jwks.json",
"issuer": "https://auth.example.com",
"audiences": ["api.example.com"],
"exclude_paths": [
"/api/health",
"/api/auth/login",
"/api/auth/register"
]
}
}
"""


SEED_003_TRANSFORMATIONS = """
{
"transformations": [
{
"path": "/api/users/**",
"response": {
"remove_fields": [
"internal_id",
"db_shard",
"feature_flags",
"created_by_admin"
],
"rename_fields": {
"email_address": "email"
}
}
}
]
}
"""


def with_upstreams(text: str, mapping: dict[str, str]) -> str:
    """Point a seed's example hosts at real loopback servers (the only change tests make)."""
    for old, new in mapping.items():
        text = text.replace(old, new)
    return text
