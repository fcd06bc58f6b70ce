"""Hostile and tricky raw request paths with the canonical path each must give (or rejection).

Each case is ``(raw_path, expected)``: ``expected`` is the canonical string ``canonicalize``
returns, or ``InvalidPath`` when the path must be rejected with a 400. Many come from published
route-auth bypasses in other gateways and proxies, where the router and the upstream read
different paths.
"""

from __future__ import annotations

from gw.errors import InvalidPath

Expected = str | type[InvalidPath]

HOSTILE_PATHS: list[tuple[str, Expected]] = [
    # --- plain paths stay as they are
    ("/", "/"),  # the root
    ("/api/orders/ord_x7k9", "/api/orders/ord_x7k9"),  # seed 003's example
    ("/api/users/", "/api/users/"),  # a trailing slash is kept
    ("/a/b:c@d/e~f!$&'()*+,=", "/a/b:c@d/e~f!$&'()*+,="),  # every plain pchar but ';'
    ("/v1.2/...", "/v1.2/..."),  # dots that are not dot segments are literal
    ("/.well-known/x", "/.well-known/x"),  # a leading dot in a segment is fine
    # --- empty segments are merged
    ("//", "/"),  # nothing but slashes
    ("//admin", "/admin"),  # protocol-relative look-alike; never a host
    ("//evil.example/x", "/evil.example/x"),  # '//' cannot change the upstream host
    ("/a//b", "/a/b"),  # '//' inside
    ("/a/b//", "/a/b/"),  # '//' at the end keeps one trailing slash
    ("///a///b///", "/a/b/"),  # runs of slashes
    # --- dot segments, plain
    ("/.", "/"),  # '.' at the root
    ("/./a", "/a"),  # leading '.'
    ("/a/./b", "/a/b"),  # '.' inside
    ("/a/.", "/a/"),  # a trailing '.' names the directory
    ("/a/b/..", "/a/"),  # a trailing '..' names the parent directory
    ("/a/b/../c", "/a/c"),  # '..' inside
    ("/a/..", "/"),  # back to the root
    ("/admin/../public", "/public"),  # '..' resolved before routing
    ("/public/../admin", "/admin"),  # the router sees /admin, so admin's policy applies
    ("/a/.//..", "/"),  # '.', '' and '..' together
    ("/a/b/../../c/./d/", "/c/d/"),  # several steps
    # --- dot segments, percent-encoded: decoded first, then resolved
    ("/a/%2e/b", "/a/b"),  # '%2e' is '.'
    ("/a/%2E/b", "/a/b"),  # upper-case hex
    ("/a/b/%2e%2e", "/a/"),  # '%2e%2e' is '..'
    ("/a/b/%2E%2E/c", "/a/c"),  # upper-case '..'
    ("/a/b/.%2e/c", "/a/c"),  # half-encoded '..'
    ("/a/b/%2e./c", "/a/c"),  # the other half
    ("/public/%2e%2e/admin", "/admin"),  # the Envoy/Traefik-style bypass resolves to /admin
    ("/%2e%2e/etc/passwd", InvalidPath),  # above the root, encoded
    ("/a/%2e%2e%2fb", InvalidPath),  # '..' plus an encoded '/'
    # --- '..' above the root is rejected, never clamped
    ("/..", InvalidPath),  # straight above the root
    ("/../admin", InvalidPath),  # clamping would turn this into /admin
    ("/a/../../b", InvalidPath),  # climbs one level too many
    ("/a/../..", InvalidPath),  # ends above the root
    ("/./..", InvalidPath),  # '.' does not make room
    # --- encoded separators and specials in a segment
    ("/a%2Fb", InvalidPath),  # encoded '/'
    ("/a%2fb", InvalidPath),  # lower-case hex
    ("/admin%2F..%2Fpublic", InvalidPath),  # traversal hidden behind encoded '/'
    ("/a%5Cb", InvalidPath),  # encoded '\'
    ("/a%5cb", InvalidPath),  # lower-case
    ("/a%3Fb", InvalidPath),  # encoded '?'
    ("/a%23b", InvalidPath),  # encoded '#'
    ("/a%3bb", InvalidPath),  # encoded ';'
    ("/a%3B/b", InvalidPath),  # encoded ';' upper-case
    # --- raw characters that readers disagree about
    ("/a;b", InvalidPath),  # ';' path parameter (Tomcat: /a;x=y/../admin tricks)
    ("/admin;/x", InvalidPath),  # the classic ';' bypass
    ("/..;/admin", InvalidPath),  # Tomcat reads '..;' as '..'
    ("/a\\b", InvalidPath),  # raw backslash
    ("/a\\..\\admin", InvalidPath),  # Windows-style traversal
    ("/a#b", InvalidPath),  # a raw fragment marker never belongs in a request path
    ("/a?b", InvalidPath),  # the query must have been split off already
    # --- NUL, CR, LF and other controls
    ("/a%00", InvalidPath),  # encoded NUL
    ("/a%00.json", InvalidPath),  # NUL truncation trick
    ("/a%0d%0aSet-Cookie:x", InvalidPath),  # encoded CR LF (header injection upstream)
    ("/a%0A", InvalidPath),  # encoded LF
    ("/a%09b", InvalidPath),  # encoded TAB
    ("/a%7f", InvalidPath),  # encoded DEL
    ("/a%c2%85", InvalidPath),  # encoded U+0085 (NEL, a C1 control)
    ("/a\x00", InvalidPath),  # raw NUL
    ("/a\r\nb", InvalidPath),  # raw CR LF
    ("/a\tb", InvalidPath),  # raw TAB
    ("/a\x7fb", InvalidPath),  # raw DEL
    # --- spaces
    ("/a b", InvalidPath),  # raw space
    ("/a%20b", "/a b"),  # encoded space is fine and decodes
    ("/a+b", "/a+b"),  # '+' is not a space in a path
    # --- double encoding: the router and a decoding-twice upstream would disagree
    ("/%252e%252e/admin", InvalidPath),  # '%2e%2e' after one decode
    ("/a/%252e%252e", InvalidPath),  # trailing
    ("/a%252fb", InvalidPath),  # '%2f' after one decode
    ("/a%255c", InvalidPath),  # '%5c' after one decode
    ("/a%2541", InvalidPath),  # any '%XX' after one decode
    ("/100%25", "/100%"),  # a lone '%' after decoding is just a character
    ("/100%25zz", "/100%zz"),  # '%' not followed by two hex digits after decoding
    # --- malformed percent-encoding
    ("/a%", InvalidPath),  # '%' at the end
    ("/a%2", InvalidPath),  # one hex digit
    ("/a%zz", InvalidPath),  # not hex
    ("/a%%32%65", InvalidPath),  # '%' followed by '%'
    # --- non-ASCII and UTF-8
    ("/caf\u00e9", InvalidPath),  # raw non-ASCII must be percent-encoded by the client
    ("/caf%C3%A9", "/caf\u00e9"),  # valid UTF-8 decodes
    ("/%E2%82%AC", "/\u20ac"),  # three-byte UTF-8
    ("/%F0%9F%98%80", "/\U0001f600"),  # four-byte UTF-8
    ("/%c0%af", InvalidPath),  # overlong '/' (the IIS unicode bug)
    ("/%c0%ae%c0%ae/admin", InvalidPath),  # overlong '..'
    ("/%e0%80%af", InvalidPath),  # three-byte overlong '/'
    ("/%ed%a0%80", InvalidPath),  # UTF-16 surrogate
    ("/%ff", InvalidPath),  # not UTF-8 at all
    ("/%C3", InvalidPath),  # truncated sequence
    ("/%C3%A9%80", InvalidPath),  # stray continuation byte
    # --- not a path at all
    ("", InvalidPath),  # empty
    ("*", InvalidPath),  # asterisk-form (OPTIONS *)
    ("a/b", InvalidPath),  # relative
    ("%2Fa", InvalidPath),  # an encoded leading '/' is not a leading '/'
    ("http://host/a", InvalidPath),  # absolute-form must go through split_target first
    # --- unreserved characters written encoded mean the same path
    ("/%61%64%6D%69%6E", "/admin"),  # 'admin' fully encoded is /admin
    ("/%41dmin", "/Admin"),  # matching stays case-sensitive after decoding
    ("/a%2Db%5Fc%7Ed", "/a-b_c~d"),  # encoded unreserved characters
]
