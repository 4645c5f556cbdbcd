/* json_text: see json_text.h. */
#include "json_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

void out_add(struct out *o, const char *s, size_t n) {
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1) cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) { perror("realloc"); exit(1); }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

void out_str(struct out *o, const char *s) { out_add(o, s, strlen(s)); }

void out_fmt(struct out *o, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) out_add(o, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void out_json_string(struct out *o, const char *s, size_t n) {
    out_str(o, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; out_add(o, e, 2); }
        else if (c < 0x20) out_fmt(o, "\\u%04x", c);
        else out_add(o, (const char *)&c, 1);
    }
    out_str(o, "\"");
}

long utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) k = 2;
        else if (c >= 0xF0 && c <= 0xF4) k = 3;
        else return (long)i;
        if (i + 1 < n && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
                          (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F)))
            return (long)i; /* overlong forms, surrogates, beyond U+10FFFF */
        for (size_t j = 1; j <= k; j++)
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return (long)i;
        i += k + 1;
    }
    return -1;
}

/* ---- the validator: a recursive descent over the text, no allocation ---------------------- */
struct js { const char *s; size_t n, i; };

static int in(char c, const char *set) { return c && strchr(set, c) != NULL; }

static void js_ws(struct js *j) {
    while (j->i < j->n && in(j->s[j->i], " \t\n\r")) j->i++;
}

static int js_string(struct js *j) {
    if (j->i >= j->n || j->s[j->i] != '"') return 0;
    j->i++;
    while (j->i < j->n) {
        unsigned char c = (unsigned char)j->s[j->i++];
        if (c == '"') return 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (j->i >= j->n) return 0;
            char e = j->s[j->i++];
            if (e == 'u') {
                for (int k = 0; k < 4; k++, j->i++)
                    if (j->i >= j->n || !in(j->s[j->i], "0123456789abcdefABCDEF")) return 0;
            } else if (!in(e, "\"\\/bfnrt")) {
                return 0;
            }
        }
    }
    return 0;
}

static int js_digits(struct js *j) {
    size_t start = j->i;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') j->i++;
    return j->i > start;
}

static int js_number(struct js *j) {
    if (j->i < j->n && j->s[j->i] == '-') j->i++;
    if (j->i < j->n && j->s[j->i] == '0') j->i++;
    else if (!js_digits(j)) return 0;
    if (j->i < j->n && j->s[j->i] == '.') { j->i++; if (!js_digits(j)) return 0; }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-')) j->i++;
        if (!js_digits(j)) return 0;
    }
    return 1;
}

static int js_literal(struct js *j, const char *word) {
    size_t k = strlen(word);
    if (j->n - j->i < k || memcmp(j->s + j->i, word, k) != 0) return 0;
    j->i += k;
    return 1;
}

static int js_value(struct js *j, int depth) {
    if (depth > MAX_DEPTH) return 0;
    js_ws(j);
    if (j->i >= j->n) return 0;
    char c = j->s[j->i];
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->i++;
        js_ws(j);
        if (j->i < j->n && j->s[j->i] == close) { j->i++; return 1; }
        for (;;) {
            if (c == '{') {
                js_ws(j);
                if (!js_string(j)) return 0;
                js_ws(j);
                if (j->i >= j->n || j->s[j->i++] != ':') return 0;
            }
            if (!js_value(j, depth + 1)) return 0;
            js_ws(j);
            if (j->i >= j->n) return 0;
            char d = j->s[j->i++];
            if (d == close) return 1;
            if (d != ',') return 0;
        }
    }
    if (c == '"') return js_string(j);
    if (c == 't') return js_literal(j, "true");
    if (c == 'f') return js_literal(j, "false");
    if (c == 'n') return js_literal(j, "null");
    return js_number(j);
}

int json_valid(const char *s, size_t n) {
    struct js j = {s, n, 0};
    if (!js_value(&j, 0)) return 0;
    js_ws(&j);
    return j.i == j.n;
}

const char *json_kind(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && in(s[i], " \t\n\r")) i++;
    if (i >= n) return "nothing";
    switch (s[i]) {
    case '{': return "object";
    case '[': return "list";
    case '"': return "str";
    case 't': case 'f': return "bool";
    case 'n': return "null";
    default: return "number";
    }
}

/* ---- reading an object's members ------------------------------------------------------------ */
void members_begin(struct members *m, const char *obj, size_t n) {
    m->s = obj;
    m->n = n;
    m->i = 0;
    while (m->i < n && obj[m->i] != '{') m->i++;
    m->i++; /* past '{' */
}

int members_next(struct members *m, const char **key, size_t *key_len, const char **val,
                 size_t *val_len) {
    struct js j = {m->s, m->n, m->i};
    js_ws(&j);
    if (j.i >= j.n || j.s[j.i] == '}') return 0;
    size_t k0 = j.i;
    if (!js_string(&j)) return 0;
    *key = j.s + k0 + 1;
    *key_len = j.i - k0 - 2;
    js_ws(&j);
    j.i++; /* ':' */
    js_ws(&j);
    size_t v0 = j.i;
    if (!js_value(&j, 0)) return 0;
    *val = j.s + v0;
    *val_len = j.i - v0;
    js_ws(&j);
    if (j.i < j.n && j.s[j.i] == ',') j.i++;
    m->i = j.i;
    return 1;
}
