/*
 * c_module: a module in plain C (POSIX sockets, no libraries) that follows docs/protocol.md.
 *
 *   make && ./c_module --port 8105            then: nc 127.0.0.1 8105   and type UP
 *   python -m shared_utils.conformance 127.0.0.1:8105
 *
 * What it shows: newline mode (one JSON reply line per command), the Dareplane-compatible
 * semicolon mode (UP -> 1, GET_PCOMMS -> A|B|..., nothing else), ';' kept inside JSON strings,
 * '\r' ignored, JSON requests with an id, errors as {"ok": false, ...}, the 1 MiB line limit,
 * many clients at once through poll(), a token checked in constant time, and log records sent
 * to the mesh's log receiver (mesh_log.c). Its own command is ECHO, which returns its arguments.
 *
 * Your own commands: add a row to COMMANDS and a branch in run_command().
 *
 * Token: with $MESH_TOKEN set, every connection must send AUTH|{"token": "..."} first, and only
 * the right token is accepted. Without a token the module binds loopback only, and AUTH answers
 * true because nothing is locked. Never answer AUTH with success without comparing the token.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "json_text.h"
#include "mesh_log.h"

#define MAX_CLIENTS 256
#define MAX_LINE (1024 * 1024) /* 1 MiB, the protocol's limit */
#define AUTH_MAX_FAILURES 3    /* then the connection is closed */

/* The command table: name and one line of HELP. GET_PCOMMS lists them in this order. */
static const struct { const char *name, *doc; } COMMANDS[] = {
    {"ECHO", "Return the arguments it was given."},
    {"STOP", "Stop running tasks (this module runs none)."},
    {"CLOSE", "Reply, then exit the process cleanly."},
    {"GET_PCOMMS", "Names of all commands."},
    {"UP", "Health check: true while the server answers."},
    {"HELP", "Each command with its arguments and first doc line."},
    {"STATUS", "Module name, version, pid, uptime, tasks, connections."},
    {"AUTH", "Authenticate this connection with the module's token (MESH_TOKEN)."},
    {"SUBSCRIBE", "Receive event lines (this module sends none)."},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

enum mode { MODE_UNSET, MODE_NEWLINE, MODE_SEMICOLON };

struct client {
    int fd;
    char *buf;          /* bytes of the command being received */
    size_t len, cap;    /* used and allocated size of buf */
    int in_string;      /* scanning inside a JSON string */
    int escape;         /* previous byte was a backslash inside a string */
    enum mode mode;     /* fixed by the first terminator */
    int authed;         /* sent the right token (or the module has none) */
    int auth_failures;  /* wrong tokens so far */
    int close_now;      /* close after the reply being sent */
    double drain_until; /* > 0: error sent, discarding input until EOF or this time */
};

static struct client clients[MAX_CLIENTS];
static int n_clients;
static const char *module_name = "c_module";
static const char *token; /* NULL: no token, every connection is trusted */
static double started;
static volatile sig_atomic_t stop_requested;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
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

/* Compare in time that depends only on the lengths, not on where the first difference is. */
static int same_secret(const char *a, size_t an, const char *b, size_t bn) {
    unsigned char diff = an != bn;
    for (size_t i = 0; i < an && i < bn; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* ---- requests ------------------------------------------------------------------------------ */
struct request {
    char cmd[128];
    const char *kwargs; size_t kwargs_len; /* raw JSON object text, or NULL */
    const char *id; size_t id_len;         /* raw JSON id text, or NULL */
};

static const char *resolve(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, COMMANDS[i].name) == 0) return COMMANDS[i].name;
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcasecmp(name, COMMANDS[i].name) == 0) return COMMANDS[i].name;
    return NULL;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void trim(const char **s, size_t *n) {
    while (*n && is_space((*s)[0])) { (*s)++; (*n)--; }
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

static int key_is(const char *key, size_t n, const char *want) {
    return n == strlen(want) && memcmp(key, want, n) == 0;
}

/* Fill req from a '{...}' request line; returns NULL or an error text (static storage). */
static const char *parse_envelope(const char *s, size_t n, struct request *req) {
    if (!json_valid(s, n) || strcmp(json_kind(s, n), "object") != 0)
        return "request is not a valid JSON object; send {\"cmd\": \"UP\", \"id\": 1}";
    struct members m;
    const char *key, *val;
    size_t klen, vlen;
    int have_cmd = 0;
    members_begin(&m, s, n);
    while (members_next(&m, &key, &klen, &val, &vlen)) {
        if (key_is(key, klen, "cmd")) {
            if (val[0] != '"' || vlen - 2 >= sizeof req->cmd || memchr(val, '\\', vlen))
                return "a JSON request needs a non-empty string 'cmd' (plain letters)";
            memcpy(req->cmd, val + 1, vlen - 2);
            req->cmd[vlen - 2] = 0;
            have_cmd = vlen > 2;
        } else if (key_is(key, klen, "id")) {
            req->id = val;
            req->id_len = vlen;
        } else if (key_is(key, klen, "kwargs")) {
            if (strcmp(json_kind(val, vlen), "object") == 0) {
                req->kwargs = val;
                req->kwargs_len = vlen;
            } else if (strcmp(json_kind(val, vlen), "null") != 0) {
                return "'kwargs' must be a JSON object";
            }
        } else {
            return "unknown request key; allowed: cmd, kwargs, id";
        }
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
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (i) out_str(o, sep);
        if (quoted) out_json_string(o, COMMANDS[i].name, strlen(COMMANDS[i].name));
        else out_str(o, COMMANDS[i].name);
    }
}

/* AUTH: NULL when the token matches (or the module has none), else the error text. */
static const char *check_token(struct client *c, const struct request *req) {
    const char *key, *val = NULL, *v;
    size_t klen, vlen = 0, n;
    struct members m;
    if (req->kwargs) {
        members_begin(&m, req->kwargs, req->kwargs_len);
        while (members_next(&m, &key, &klen, &v, &n))
            if (key_is(key, klen, "token")) { val = v; vlen = n; }
    }
    if (!val || val[0] != '"') return "AUTH: argument 'token' (a string) is required";
    if (!token) { c->authed = 1; return NULL; } /* no token: nothing is locked */
    /* The raw string content is compared: a token with quotes or backslashes never matches. */
    if (same_secret(val + 1, vlen - 2, token, strlen(token))) {
        c->authed = 1;
        c->auth_failures = 0;
        return NULL;
    }
    c->auth_failures++;
    mesh_log(LOG_WARNING, "wrong AUTH token", "{}"); /* never log the token itself */
    if (c->auth_failures >= AUTH_MAX_FAILURES) {
        c->close_now = 1;
        return "AUTH: wrong token; connection closed after 3 failures";
    }
    return "AUTH: wrong token";
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
        for (size_t i = 0; i < N_COMMANDS; i++) {
            const char *args = strcmp(COMMANDS[i].name, "AUTH") == 0
                ? "{\"name\": \"token\", \"type\": \"str\", \"required\": true, \"default\": null}"
                : "";
            out_str(o, i ? ", {\"name\": " : "{\"name\": ");
            out_json_string(o, COMMANDS[i].name, strlen(COMMANDS[i].name));
            out_str(o, ", \"doc\": ");
            out_json_string(o, COMMANDS[i].doc, strlen(COMMANDS[i].doc));
            out_fmt(o, ", \"kwargs\": [%s], \"accepts_extra\": %s}", args,
                    strcmp(COMMANDS[i].name, "ECHO") == 0 ? "true" : "false");
        }
        out_str(o, "]}");
    } else if (strcmp(name, "STATUS") == 0) {
        out_str(o, "{\"module\": ");
        out_json_string(o, module_name, strlen(module_name));
        out_fmt(o, ", \"version\": \"0.2.0\", \"pid\": %ld, \"uptime_s\": %.3f, \"tasks\": [], "
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

/* Read "CMD" or "CMD|{json}" into req; returns NULL or an error text (in msg). */
static const char *parse_plain(const char *line, size_t n, struct request *req, char *msg,
                               size_t msg_size) {
    const char *bar = memchr(line, '|', n);
    const char *cmd = line;
    size_t cmd_len = bar ? (size_t)(bar - line) : n;
    trim(&cmd, &cmd_len);
    if (cmd_len == 0 || cmd_len >= sizeof req->cmd) {
        strcpy(req->cmd, "?");
        return "empty or over-long command name; send CMD or CMD|{json object}";
    }
    memcpy(req->cmd, cmd, cmd_len);
    req->cmd[cmd_len] = 0;
    if (!bar) return NULL;
    const char *p = bar + 1;
    size_t pn = n - (size_t)(p - line);
    trim(&p, &pn);
    if (pn && !json_valid(p, pn)) {
        snprintf(msg, msg_size, "payload of %.100s is not valid JSON; send CMD|{\"key\": value} "
                 "with double-quoted keys", req->cmd);
        return msg;
    }
    if (pn && strcmp(json_kind(p, pn), "object") != 0) {
        snprintf(msg, msg_size, "payload of %.100s must be a JSON object, got %s; send "
                 "CMD|{\"key\": value}", req->cmd, json_kind(p, pn));
        return msg;
    }
    if (pn) { req->kwargs = p; req->kwargs_len = pn; }
    return NULL;
}

/* Handle one framed command line (not empty, '\r' already removed). Returns 1 to exit. */
static int handle_line(struct client *c, const char *line, size_t n) {
    struct out o = {0};
    struct request req;
    memset(&req, 0, sizeof req);
    const char *error = NULL, *name = NULL;
    char msg[600];
    int close_after = 0;
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
        error = parse_plain(line, n, &req, msg, sizeof msg);
    }
    if (!error && !(name = resolve(req.cmd))) {
        struct out names = {0};
        pcomms_joined(&names, ", ", 0);
        snprintf(msg, sizeof msg, "unknown command '%.100s'. Valid commands: %s "
                 "(send HELP for details)", req.cmd, names.p);
        free(names.p);
        error = msg;
    }
    if (!error && strcmp(name, "AUTH") == 0) error = check_token(c, &req);
    else if (!error && token && !c->authed)
        error = "authentication required: send AUTH|{\"token\": \"...\"} first";

    if (c->mode == MODE_SEMICOLON) { /* dareplane-utils replies: UP -> 1, GET_PCOMMS -> A|B */
        if (!error && strcmp(name, "UP") == 0) out_str(&o, "1");
        else if (!error && strcmp(name, "GET_PCOMMS") == 0) pcomms_joined(&o, "|", 0);
        close_after = !error && strcmp(name, "CLOSE") == 0;
    } else if (error) {
        reply_error(&o, req.cmd, &req, error);
    } else {
        close_after = run_command(&o, name, &req);
    }
    if (error) {
        struct out kv = {0};
        out_str(&kv, "{\"error\": ");
        out_json_string(&kv, error, strlen(error));
        out_str(&kv, "}");
        mesh_log(LOG_WARNING, "bad request", kv.p);
        free(kv.p);
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
    for (size_t i = 0; i < n && !c->close_now; i++) {
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

static int serve(int lfd) {
    struct pollfd pfds[MAX_CLIENTS + 1];
    static char rbuf[65536];
    while (!stop_requested) {
        pfds[0].fd = lfd;
        pfds[0].events = POLLIN;
        for (int k = 0; k < n_clients; k++) {
            pfds[k + 1].fd = clients[k].fd;
            pfds[k + 1].events = POLLIN;
        }
        if (poll(pfds, (nfds_t)n_clients + 1, 250) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
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
            if (c->close_now) drop_client(k);
        }
        if (pfds[0].revents & POLLIN) {
            int fd = accept(lfd, NULL, NULL);
            int one = 1;
            if (fd >= 0 && n_clients < MAX_CLIENTS) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                clients[n_clients] = (struct client){.fd = fd, .authed = token == NULL};
                n_clients++;
            } else if (fd >= 0) {
                close(fd); /* full: the client sees the connection closed */
            }
        }
    }
    return 0;
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
            fprintf(stderr, "usage: %s [--port P] [--ip 127.0.0.1] [--name NAME]\n"
                    "  MESH_TOKEN: require AUTH with this token (needed to bind off loopback)\n"
                    "  MESH_LOG_SERVER: log receiver host:port (default 127.0.0.1:9020; none)\n",
                    argv[0]);
            return 2;
        }
    }
    token = getenv("MESH_TOKEN");
    if (token && !*token) token = NULL;
    mesh_log_init(module_name);
    if (strncmp(ip, "127.", 4) != 0 && !token) {
        fprintf(stderr, "%s: binding %s needs a token: set MESH_TOKEN (clients then send "
                "AUTH first)\n", module_name, ip);
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
    char kv[128];
    snprintf(kv, sizeof kv, "{\"ip\": \"%s\", \"port\": %d, \"token\": %s}", ip, port,
             token ? "true" : "false");
    mesh_log(LOG_INFO, "listening", kv);

    int exit_code = serve(lfd);
    while (n_clients) drop_client(0);
    close(lfd);
    mesh_log(LOG_INFO, "closed", "{}");
    mesh_log_close();
    return exit_code;
}
