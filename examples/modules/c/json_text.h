/*
 * json_text: the little JSON a module needs, without a library: a growable output buffer that
 * writes JSON strings with escapes, a validator for payloads, and a reader for an object's
 * members. Swap it for cJSON or jansson if your project already has one.
 */
#ifndef JSON_TEXT_H
#define JSON_TEXT_H

#include <stddef.h>

/* A growable text buffer (p is NUL-terminated; free(p) when done). */
struct out { char *p; size_t len, cap; };

void out_add(struct out *o, const char *s, size_t n);
void out_str(struct out *o, const char *s);
void out_fmt(struct out *o, const char *fmt, ...);
/* Append s[0..n) as a JSON string literal (quotes and escapes added). */
void out_json_string(struct out *o, const char *s, size_t n);

/* Index of the first invalid UTF-8 byte, or -1 if s[0..n) is valid UTF-8. */
long utf8_invalid_at(const unsigned char *s, size_t n);
/* 1 if s[0..n) is exactly one JSON value (surrounding whitespace allowed). */
int json_valid(const char *s, size_t n);
/* "object", "list", "str", "bool", "null", "number" or "nothing" (first byte only). */
const char *json_kind(const char *s, size_t n);

/* Walks the members of a JSON object that json_valid() accepted. */
struct members { const char *s; size_t n, i; };

void members_begin(struct members *m, const char *obj, size_t n);
/* Next member: key without quotes (raw text) and value text. Returns 0 after the last one. */
int members_next(struct members *m, const char **key, size_t *key_len, const char **val,
                 size_t *val_len);

#endif
