/* Character classes of HTTP/1.1 messages, shared by the compiled readers of the usual request
(gw/edge/_requestfields.c) and the usual answer (gw/upstream/_wire.c) and by the upstream
request head's checks. */

#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <Python.h>
#include <string.h>

/* RFC 9110 token characters: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA. */
static inline int is_token_char(unsigned char c) {
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return 1;
    /* PERF: a switch (a bit test), not strchr: a call for every '-' of every name. */
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return 1;
    default:
        return 0;
    }
}

/* A character of a reason phrase or a field value as the readers take it: visible ASCII,
   space, tab (no obs-text, no control character). */
static inline int is_field_text(unsigned char c) { return (c >= 0x20 && c < 0x7f) || c == '\t'; }

/* Whether ``text`` (token or field-text characters) is ``known`` (lower-case letters and '-')
   in any case. */
static inline int same_in_any_case(const unsigned char *text, Py_ssize_t size,
                                   const char *known) {
    if ((Py_ssize_t)strlen(known) != size) return 0;
    for (Py_ssize_t at = 0; at < size; at++)
        if ((text[at] | 0x20) != known[at]) return 0;
    return 1;
}

#endif
