/* mesh_log: see mesh_log.h. */
#define _POSIX_C_SOURCE 200809L
#include "mesh_log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "json_text.h"

static char host[256] = "127.0.0.1";
static char port[16] = "9020";
static int enabled = 1, console = 1, fd = -1;
static double retry_at;
static const char *module_name = "module";

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void mesh_log_init(const char *module) {
    module_name = module;
    const char *con = getenv("MESH_LOG_CONSOLE");
    console = !(con && strcmp(con, "0") == 0);
    const char *v = getenv("MESH_LOG_SERVER");
    if (!v) return;
    static const char *off[] = {"", "none", "off", "0", "false", "no", "disabled"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
        if (strcasecmp(v, off[i]) == 0) { enabled = 0; return; }
    const char *colon = strrchr(v, ':');
    if (colon) {
        size_t hn = (size_t)(colon - v);
        if (hn && v[0] == '[' && v[hn - 1] == ']') { v++; hn -= 2; } /* [::1]:9020 */
        if (hn >= sizeof host) hn = sizeof host - 1;
        memcpy(host, v, hn);
        host[hn] = 0;
        if (!hn) strcpy(host, "127.0.0.1");
        v = colon + 1;
    }
    snprintf(port, sizeof port, "%s", v);
}

static void connect_receiver(void) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    retry_at = wall_s() + 2.0; /* if this fails, do not try again for a while */
    if (getaddrinfo(host, port, &hints, &res) != 0) return;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {1, 0}; /* a connect to a silent host gives up after a second */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) { close(fd); fd = -1; continue; }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    freeaddrinfo(res);
}

static const char *level_name(int levelno) {
    return levelno >= LOG_ERROR ? "ERROR" : levelno >= LOG_WARNING ? "WARNING" : "INFO";
}

void mesh_log(int levelno, const char *event, const char *kv_json) {
    if (console) fprintf(stderr, "%s: %s %s\n", module_name, event, kv_json);
    if (!enabled) return;
    if (fd < 0 && wall_s() >= retry_at) connect_receiver();
    if (fd < 0) return;

    double now = wall_s();
    time_t sec = (time_t)now;
    struct tm tm;
    char stamp[64], lower[16];
    gmtime_r(&sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *name = level_name(levelno);
    for (size_t i = 0; i <= strlen(name); i++) lower[i] = (char)(name[i] | (name[i] ? 0x20 : 0));

    struct out body = {0};
    out_fmt(&body, "{\"mesh\": 1, \"time\": \"%s.%06ld+00:00\", \"created\": %.6f, ", stamp,
            (long)((now - (double)sec) * 1e6), now);
    out_str(&body, "\"module\": ");
    out_json_string(&body, module_name, strlen(module_name));
    out_str(&body, ", \"name\": ");
    out_json_string(&body, module_name, strlen(module_name));
    out_fmt(&body, ", \"level\": \"%s\", \"levelname\": \"%s\", \"levelno\": %d, \"event\": ",
            lower, name, levelno);
    out_json_string(&body, event, strlen(event));
    out_str(&body, ", \"msg\": ");
    out_json_string(&body, event, strlen(event));
    out_fmt(&body, ", \"args\": [], \"process\": %ld, \"kv\": %s}", (long)getpid(), kv_json);

    unsigned char head[4] = {(unsigned char)(body.len >> 24), (unsigned char)(body.len >> 16),
                             (unsigned char)(body.len >> 8), (unsigned char)body.len};
    struct out frame = {0};
    out_add(&frame, (const char *)head, 4);
    out_add(&frame, body.p, body.len);
    ssize_t sent = send(fd, frame.p, frame.len, MSG_NOSIGNAL);
    if (sent != (ssize_t)frame.len && !(sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
        close(fd); /* gone, or half a frame written: start a fresh stream next time */
        fd = -1;
    }
    free(body.p);
    free(frame.p);
}

void mesh_log_close(void) {
    if (fd >= 0) close(fd);
    fd = -1;
}
