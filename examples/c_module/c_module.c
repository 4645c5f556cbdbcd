/*
 * c_module: a module in plain C (POSIX sockets, no libraries) that follows docs/protocol.md.
 *
 *   make && ./c_module --port 8105            then: nc 127.0.0.1 8105   and type UP
 *   python -m shared_utils.conformance 127.0.0.1:8105
 *
 * What it shows: newline mode (one JSON reply line per command), the Dareplane-compatible
 * semicolon mode (UP -> 1, GET_PCOMMS -> A|B|..., nothing else), ';' kept inside JSON strings,
 * '\r' ignored, JSON requests with an id, errors as {"ok": false, ...}, the 1 MiB line limit,
 * and many clients at once through poll(). Its own command is ECHO, which returns its arguments.
 *
 * It binds loopback only (it has no AUTH token support), so AUTH simply answers true.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define MAX_LINE (1024 * 1024) /* 1 MiB, the protocol's limit */
#define MAX_DEPTH 64

enum mode { MODE_UNSET, MODE_NEWLINE, MODE_SEMICOLON };

struct client {
    int fd;
    char *buf;        /* bytes of the command being received */
    size_t len, cap;  /* used and allocated size of buf */
    int in_string;    /* scanning inside a JSON string */
    int escape;       /* previous byte was a backslash inside a string */
    enum mode mode;   /* fixed by the first terminator */
    double drain_until; /* > 0: error sent, discarding input until EOF or this time */
};

static const char *NAMES[] = {"ECHO", "STOP", "CLOSE", "GET_PCOMMS", "UP",
                              "HELP", "STATUS", "AUTH", "SUBSCRIBE"};
static const char *DOCS[] = {
    "Return the arguments it was given.",
    "Stop running tasks (this module runs none).",
    "Reply, then exit the process cleanly.",
    "Names of all commands.",
    "Health check: true while the server answers.",
    "Each command with its arguments and first doc line.",
    "Module name, version, pid, uptime, tasks, connections.",
    "Authenticate (always true: this module binds loopback only).",
    "Receive event lines (this module sends none).",
};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

static struct client clients[MAX_CLIENTS];
static int n_clients;
static const char *module_name = "c_module";
static double started;
static volatile sig_atomic_t stop_requested;

/* ---- small helpers ------------------------------------------------------------------------ */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct out { char *p; size_t len, cap; };

static void out_add(struct out *o, const char *s, size_t n) {
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

static void out_str(struct out *o, const char *s) { out_add(o, s, strlen(s)); }

static void out_fmt(struct out *o, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    out_add(o, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Append s[0..n) as a JSON string literal (quotes and escapes added). */
static void out_json_string(struct out *o, const char *s, size_t n) {
    out_str(o, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; out_add(o, e, 2); }
        else if (c < 0x20) out_fmt(o, "\\u%04x", c);
        else out_add(o, (const char *)&c, 1);
    }
    out_str(o, "\"");
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Index of the first invalid UTF-8 byte, or -1 if s[0..n) is valid UTF-8. */
static long utf8_invalid_at(const unsigned char *s, size_t n) {
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

/* ---- a minimal JSON validator: enough to check payloads and read a request's members ---- */
struct js { const char *s; size_t n, i; };

static void js_ws(struct js *j) {
    while (j->i < j->n && strchr(" \t\n\r", j->s[j->i]) && j->s[j->i]) j->i++;
}

static int js_value(struct js *j, int depth);

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
                    if (j->i >= j->n || !strchr("0123456789abcdefABCDEF", j->s[j->i]) ||
                        !j->s[j->i])
                        return 0;
            } else if (!strchr("\"\\/bfnrt", e) || !e) {
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

/* 1 if s[0..n) is exactly one JSON value (surrounding whitespace allowed). */
static int json_valid(const char *s, size_t n) {
    struct js j = {s, n, 0};
    if (!js_value(&j, 0)) return 0;
    js_ws(&j);
    return j.i == j.n;
}

static const char *json_kind(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && strchr(" \t\n\r", s[i]) && s[i]) i++;
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

/* ---- requests ------------------------------------------------------------------------------ */
struct request {
    char cmd[128];
    const char *kwargs; size_t kwargs_len; /* raw JSON object text, or NULL */
    const char *id; size_t id_len;         /* raw JSON id text, or NULL */
};

static const char *resolve(const char *name) {
    for (size_t i = 0; i < N_NAMES; i++)
        if (strcmp(name, NAMES[i]) == 0) return NAMES[i];
    for (size_t i = 0; i < N_NAMES; i++)
        if (strcasecmp(name, NAMES[i]) == 0) return NAMES[i];
    return NULL;
}

static void trim(const char **s, size_t *n) {
    while (*n && strchr(" \t\n\r", (*s)[0]) && (*s)[0]) { (*s)++; (*n)--; }
    while (*n && strchr(" \t\n\r", (*s)[*n - 1]) && (*s)[*n - 1]) (*n)--;
}

/* Fill req from a '{...}' request line; returns NULL or an error text (static storage). */
static const char *parse_envelope(const char *s, size_t n, struct request *req) {
    if (!json_valid(s, n) || strcmp(json_kind(s, n), "object") != 0)
        return "request is not a valid JSON object; send {\"cmd\": \"UP\", \"id\": 1}";
    struct js j = {s, n, 0};
    int have_cmd = 0;
    js_ws(&j);
    j.i++; /* '{' */
    for (;;) {
        js_ws(&j);
        if (j.s[j.i] == '}') break;
        size_t k0 = j.i;
        js_string(&j);
        size_t klen = j.i - k0;
        js_ws(&j);
        j.i++; /* ':' */
        js_ws(&j);
        size_t v0 = j.i;
        js_value(&j, 0);
        size_t vlen = j.i - v0;
        if (klen == 5 && memcmp(s + k0, "\"cmd\"", 5) == 0) {
            if (s[v0] != '"' || vlen - 2 >= sizeof req->cmd || memchr(s + v0, '\\', vlen))
                return "a JSON request needs a non-empty string 'cmd' (plain letters)";
            memcpy(req->cmd, s + v0 + 1, vlen - 2);
            req->cmd[vlen - 2] = 0;
            have_cmd = vlen > 2;
        } else if (klen == 4 && memcmp(s + k0, "\"id\"", 4) == 0) {
            req->id = s + v0;
            req->id_len = vlen;
        } else if (klen == 8 && memcmp(s + k0, "\"kwargs\"", 8) == 0) {
            if (strcmp(json_kind(s + v0, vlen), "object") != 0 &&
                strcmp(json_kind(s + v0, vlen), "null") != 0)
                return "'kwargs' must be a JSON object";
            if (s[v0] == '{') { req->kwargs = s + v0; req->kwargs_len = vlen; }
        } else {
            return "unknown request key; allowed: cmd, kwargs, id";
        }
        js_ws(&j);
        if (j.s[j.i++] == '}') break;
    }
    return have_cmd ? NULL : "a JSON request needs a non-empty string 'cmd'";
}

static void reply_head(struct out *o, int ok, const char *cmd, const struct request *req) {
    out_fmt(o, "{\"ok\": %s, \"cmd\": ", ok ? "true" : "false");
    out_json_string(o, cmd, strlen(cmd));
    if (req && req->id) {
        out_str(o, ", \"id\": ");
        out_add(o, req->id, req->id_len);
    }
}

static void reply_error(struct out *o, const char *cmd, const struct request *req,
                        const char *error) {
    reply_head(o, 0, cmd, req);
    out_str(o, ", \"error\": ");
    out_json_string(o, error, strlen(error));
    out_str(o, "}\n");
}

static void pcomms_joined(struct out *o, const char *sep, int quoted) {
    for (size_t i = 0; i < N_NAMES; i++) {
        if (i) out_str(o, sep);
        if (quoted) out_json_string(o, NAMES[i], strlen(NAMES[i]));
        else out_str(o, NAMES[i]);
    }
}

/* Run one command; the result JSON goes to o. Returns 1 if the process should exit after. */
static int run_command(struct out *o, const char *name, const struct request *req) {
    reply_head(o, 1, name, req);
    out_str(o, ", \"result\": ");
    int close_after = 0;
    if (strcmp(name, "UP") == 0 || strcmp(name, "AUTH") == 0 || strcmp(name, "SUBSCRIBE") == 0) {
        out_str(o, "true");
    } else if (strcmp(name, "GET_PCOMMS") == 0) {
        out_str(o, "[");
        pcomms_joined(o, ", ", 1);
        out_str(o, "]");
    } else if (strcmp(name, "ECHO") == 0) {
        if (req->kwargs) out_add(o, req->kwargs, req->kwargs_len);
        else out_str(o, "{}");
    } else if (strcmp(name, "HELP") == 0) {
        out_str(o, "{\"module\": ");
        out_json_string(o, module_name, strlen(module_name));
        out_str(o, ", \"commands\": [");
        for (size_t i = 0; i < N_NAMES; i++) {
            out_str(o, i ? ", {\"name\": " : "{\"name\": ");
            out_json_string(o, NAMES[i], strlen(NAMES[i]));
            out_str(o, ", \"doc\": ");
            out_json_string(o, DOCS[i], strlen(DOCS[i]));
            out_fmt(o, ", \"kwargs\": [], \"accepts_extra\": %s}", i == 0 ? "true" : "false");
        }
        out_str(o, "]}");
    } else if (strcmp(name, "STATUS") == 0) {
        out_str(o, "{\"module\": ");
        out_json_string(o, module_name, strlen(module_name));
        out_fmt(o, ", \"version\": \"0.1.0\", \"pid\": %ld, \"uptime_s\": %.3f, \"tasks\": [], "
                   "\"connections\": %d}", (long)getpid(), now_s() - started, n_clients);
    } else if (strcmp(name, "STOP") == 0) {
        out_str(o, "{\"stopped_tasks\": []}");
    } else if (strcmp(name, "CLOSE") == 0) {
        out_str(o, "{\"closing\": ");
        out_json_string(o, module_name, strlen(module_name));
        out_str(o, ", \"stopped_tasks\": []}");
        close_after = 1;
    }
    out_str(o, "}\n");
    return close_after;
}

/* Handle one framed command line (not empty, '\r' already removed). Returns 1 to exit. */
static int handle_line(struct client *c, const char *line, size_t n) {
    struct out o = {0};
    struct request req;
    memset(&req, 0, sizeof req);
    const char *error = NULL;
    char msg[600];
    int close_after = 0;
    const char *name = NULL;
    long bad = utf8_invalid_at((const unsigned char *)line, n);

    trim(&line, &n);
    if (bad >= 0) {
        snprintf(msg, sizeof msg, "command is not valid UTF-8 (byte %ld); send UTF-8 text", bad);
        error = msg;
        strcpy(req.cmd, "?");
    } else if (n && line[0] == '{') {
        error = parse_envelope(line, n, &req);
        if (error && !req.cmd[0]) strcpy(req.cmd, "?");
    } else {
        const char *bar = memchr(line, '|', n);
        const char *cmd = line;
        size_t cmd_len = bar ? (size_t)(bar - line) : n;
        trim(&cmd, &cmd_len);
        if (cmd_len == 0 || cmd_len >= sizeof req.cmd) {
            error = "empty or over-long command name; send CMD or CMD|{json object}";
            strcpy(req.cmd, "?");
        } else {
            memcpy(req.cmd, cmd, cmd_len);
            req.cmd[cmd_len] = 0;
        }
        if (!error && bar) {
            const char *p = bar + 1;
            size_t pn = n - (size_t)(p - line);
            trim(&p, &pn);
            if (pn && !json_valid(p, pn)) {
                snprintf(msg, sizeof msg, "payload of %.100s is not valid JSON; send "
                         "CMD|{\"key\": value} with double-quoted keys", req.cmd);
                error = msg;
            } else if (pn && strcmp(json_kind(p, pn), "object") != 0) {
                snprintf(msg, sizeof msg, "payload of %.100s must be a JSON object, got %s; "
                         "send CMD|{\"key\": value}", req.cmd, json_kind(p, pn));
                error = msg;
            } else if (pn) {
                req.kwargs = p;
                req.kwargs_len = pn;
            }
        }
    }
    if (!error) {
        name = resolve(req.cmd);
        if (!name) {
            struct out names = {0};
            pcomms_joined(&names, ", ", 0);
            snprintf(msg, sizeof msg, "unknown command '%.100s'. Valid commands: %s "
                     "(send HELP for details)", req.cmd, names.p);
            free(names.p);
            error = msg;
        }
    }

    if (c->mode == MODE_SEMICOLON) { /* dareplane-utils replies: UP -> 1, GET_PCOMMS -> A|B */
        if (!error && strcmp(name, "UP") == 0) out_str(&o, "1");
        else if (!error && strcmp(name, "GET_PCOMMS") == 0) pcomms_joined(&o, "|", 0);
        else if (error) fprintf(stderr, "%s: %s\n", module_name, error);
        close_after = !error && strcmp(name, "CLOSE") == 0;
    } else if (error) {
        reply_error(&o, req.cmd, &req, error);
    } else {
        close_after = run_command(&o, name, &req);
    }
    if (o.len) send_all(c->fd, o.p, o.len);
    free(o.p);
    return close_after;
}

/* ---- framing ------------------------------------------------------------------------------- */
static void drop_client(int k) {
    close(clients[k].fd);
    free(clients[k].buf);
    clients[k] = clients[--n_clients];
}

/* Feed received bytes to client c; returns 1 if CLOSE was requested. */
static int feed(struct client *c, const char *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char b = data[i];
        if (b == '\r') continue;
        int terminator = 0;
        if (c->escape) {
            c->escape = 0;
            terminator = b == '\n';
        } else if (b == '\n') {
            terminator = 1;
        } else if (b == ';' && !c->in_string) {
            terminator = 1;
        } else if (b == '"') {
            c->in_string = !c->in_string;
        } else if (b == '\\' && c->in_string) {
            c->escape = 1;
        }
        if (terminator) {
            if (c->mode == MODE_UNSET) c->mode = b == '\n' ? MODE_NEWLINE : MODE_SEMICOLON;
            size_t len = c->len;
            c->len = 0;
            c->in_string = 0;
            const char *line = c->buf;
            trim(&line, &len);
            if (len && handle_line(c, line, len)) return 1;
            continue;
        }
        if (c->len >= MAX_LINE) { /* over the limit: error, then close after draining */
            struct out o = {0};
            reply_error(&o, "?", NULL, "command longer than 1048576 bytes; connection closed "
                        "(end each command with a newline)");
            if (c->mode != MODE_SEMICOLON) send_all(c->fd, o.p, o.len);
            free(o.p);
            shutdown(c->fd, SHUT_WR);
            c->drain_until = now_s() + 2.0;
            c->len = 0;
            return 0;
        }
        if (c->len + 1 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 1024;
            char *p = realloc(c->buf, cap);
            if (!p) { perror("realloc"); exit(1); }
            c->buf = p;
            c->cap = cap;
        }
        c->buf[c->len++] = b;
    }
    return 0;
}

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static const char *arg_value(int argc, char **argv, int *i, const char *flag) {
    size_t k = strlen(flag);
    if (strncmp(argv[*i], flag, k) != 0) return NULL;
    if (argv[*i][k] == '=') return argv[*i] + k + 1;
    if (argv[*i][k] == 0 && *i + 1 < argc) return argv[++*i];
    return NULL;
}

int main(int argc, char **argv) {
    const char *ip = "127.0.0.1";
    int port = 8105;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = arg_value(argc, argv, &i, "--port"))) port = atoi(v);
        else if ((v = arg_value(argc, argv, &i, "--ip"))) ip = v;
        else if ((v = arg_value(argc, argv, &i, "--name"))) module_name = v;
        else {
            fprintf(stderr, "usage: %s [--port P] [--ip 127.0.0.1] [--name NAME]\n", argv[0]);
            return 2;
        }
    }
    if (strncmp(ip, "127.", 4) != 0) {
        fprintf(stderr, "%s: binds loopback only (no AUTH token support); got --ip %s\n",
                module_name, ip);
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    started = now_s();

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 128) != 0) {
        fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", module_name, ip, port,
                strerror(errno));
        return 2;
    }
    fprintf(stderr, "%s: listening on %s:%d\n", module_name, ip, port);

    struct pollfd pfds[MAX_CLIENTS + 1];
    char rbuf[65536];
    int exit_code = 0;
    while (!stop_requested) {
        pfds[0].fd = lfd;
        pfds[0].events = POLLIN;
        for (int k = 0; k < n_clients; k++) {
            pfds[k + 1].fd = clients[k].fd;
            pfds[k + 1].events = POLLIN;
        }
        int nready = poll(pfds, (nfds_t)n_clients + 1, 250);
        if (nready < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            exit_code = 1;
            break;
        }
        /* clients first (indices stay valid: new clients are only appended afterwards) */
        for (int k = n_clients - 1; k >= 0; k--) {
            struct client *c = &clients[k];
            if (c->drain_until > 0 && now_s() > c->drain_until) { drop_client(k); continue; }
            if (!(pfds[k + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (got <= 0) { drop_client(k); continue; }
            if (c->drain_until > 0) continue; /* discarding after an over-long line */
            if (feed(c, rbuf, (size_t)got)) { stop_requested = 1; break; }
        }
        if (pfds[0].revents & POLLIN) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0 && n_clients < MAX_CLIENTS) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                clients[n_clients] = (struct client){.fd = fd};
                n_clients++;
            } else if (fd >= 0) {
                close(fd); /* full: the client sees the connection closed */
            }
        }
    }
    while (n_clients) drop_client(0);
    close(lfd);
    fprintf(stderr, "%s: closed\n", module_name);
    return exit_code;
}
