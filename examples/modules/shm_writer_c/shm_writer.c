/*
 * shm_writer: a stream source in plain C that publishes into a closedloop-mesh shared-memory ring
 * (layout version 1, docs/shm-transport.md). Linux, no libraries beyond libc.
 *
 *   make && ./shm_writer --name probe0 --channels 384 --srate 30000 --samples 300000 --paced
 *
 * Python consumers on the same host read it with shared_utils.streams.shm.ShmReader("probe0").
 * Sample k, channel c carries the int16 value (7 k + c) mod 32000, so a reader can check every
 * value; timestamps are CLOCK_MONOTONIC seconds (the LSL clock), newest sample of a chunk = now.
 *
 * Protocol (see the doc): create the ring under a temporary name, lock byte 2^40 (open-file-
 * description lock: the kernel frees it when we die), fill the header, link it to the final
 * name (fails if a live writer owns that name); per chunk: store write_start = s + n, copy rows
 * and timestamps, store write_end = s + n, bump the notify word, FUTEX_WAKE it. On exit: state =
 * closed, wake, unlink. It prints "ready", waits for a line on stdin, writes, prints "done N",
 * and with --hold waits for another line before closing (a test drives it this way).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 4096
#define META_SIZE 4096
#define LOCK_WRITER (1LL << 40)
#define DTYPE_INT16 5 /* LSL's cf_int16 */

struct hot { /* at offset 128 */
    uint64_t write_start, write_end;
    uint32_t notify, pad;
    double last_commit;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int lock_op(int fd, short type, int cmd) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = LOCK_WRITER, .l_len = 1};
    if (fcntl(fd, cmd, &fl) < 0) return -1;
    return fl.l_type;
}

static void put_u32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put_u64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }
static void put_f64(uint8_t *b, size_t off, double v) { memcpy(b + off, &v, 8); }

static int fail(const char *what) {
    fprintf(stderr, "shm_writer: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    const char *name = "c_probe", *session = getenv("MESH_SHM_SESSION");
    long channels = 8, samples = 10000, chunk = 10, paced = 0, hold = 0;
    double srate = 1000.0, capacity_s = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--name")) name = v, i++;
        else if (!strcmp(a, "--channels")) channels = atol(v), i++;
        else if (!strcmp(a, "--srate")) srate = atof(v), i++;
        else if (!strcmp(a, "--samples")) samples = atol(v), i++;
        else if (!strcmp(a, "--chunk")) chunk = atol(v), i++;
        else if (!strcmp(a, "--capacity-s")) capacity_s = atof(v), i++;
        else if (!strcmp(a, "--paced")) paced = 1;
        else if (!strcmp(a, "--hold")) hold = 1;
        else { fprintf(stderr, "shm_writer: unknown option %s\n", a); return 2; }
    }
    if (!session || !*session) session = "default";
    for (const char *p = name; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", *p)) {
            fprintf(stderr, "shm_writer: keep the stream name to [A-Za-z0-9_-] here\n");
            return 2;
        }
    uint64_t capacity = (uint64_t)ceil(capacity_s * srate);
    if (channels < 1 || srate <= 0 || capacity_s < 0.1 || chunk < 1 || (uint64_t)chunk > capacity / 2) {
        fprintf(stderr, "shm_writer: need channels >= 1, srate > 0, capacity_s >= 0.1, chunk <= half the ring\n");
        return 2;
    }
    uint64_t data_off = HEADER_SIZE + META_SIZE;
    uint64_t ts_off = data_off + ((capacity * channels * 2 + 63) / 64) * 64;
    uint64_t total = ((ts_off + 8 * capacity + 4095) / 4096) * 4096;

    char final[256], tmp[300], path_final[300], path_tmp[340];
    snprintf(final, sizeof final, "clmesh.%s.%s", session, name);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d-c", final, (int)getpid());
    snprintf(path_final, sizeof path_final, "/dev/shm/%s", final);
    snprintf(path_tmp, sizeof path_tmp, "/dev/shm/%s", tmp);

    int fd = open(path_tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fail("create");
    if (lock_op(fd, F_WRLCK, F_OFD_SETLK) < 0) return fail("lock");
    int err = posix_fallocate(fd, 0, (off_t)total);
    if (err) { errno = err; unlink(path_tmp); return fail("reserve /dev/shm space"); }
    uint8_t *b = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (b == MAP_FAILED) { unlink(path_tmp); return fail("mmap"); }

    /* Header (all little-endian; offsets from the doc). Magic last. */
    put_u32(b, 8, 1); put_u32(b, 12, HEADER_SIZE); put_u32(b, 16, DTYPE_INT16); put_u32(b, 20, 2);
    put_u32(b, 24, (uint32_t)channels); put_u32(b, 28, 32); put_f64(b, 32, srate);
    put_u64(b, 40, capacity); put_u64(b, 48, data_off); put_u64(b, 56, ts_off);
    put_u64(b, 64, total); put_u32(b, 72, (uint32_t)getpid()); put_u32(b, 76, 1);
    put_f64(b, 80, now_s()); put_f64(b, 88, (double)time(NULL));
    if (getrandom(b + 96, 16, 0) != 16) return fail("uid");
    put_u64(b, 112, META_SIZE);
    snprintf((char *)b + 256, 256, "%s", name);
    snprintf((char *)b + 512, 64, "%s", "ExtracellularEphys");
    snprintf((char *)b + HEADER_SIZE, META_SIZE, "{\"unit\": \"uV\", \"source\": \"shm_writer.c\"}");
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(b, "CLMESHRB", 8);

    /* Give it the stream's name; a dead writer's ring is replaced, a live one refuses us. */
    while (link(path_tmp, path_final) < 0) {
        if (errno != EEXIST) { unlink(path_tmp); return fail("link"); }
        int other = open(path_final, O_RDWR | O_CLOEXEC);
        if (other < 0) continue; /* vanished meanwhile: try again */
        int held = lock_op(other, F_WRLCK, F_OFD_GETLK);
        uint32_t pid = 0;
        pread(other, &pid, 4, 72);
        close(other);
        if (held != F_UNLCK) {
            fprintf(stderr, "shm_writer: stream '%s' already has a live writer (pid %u)\n", name, pid);
            unlink(path_tmp);
            return 1;
        }
        unlink(path_final);
    }
    unlink(path_tmp);

    struct hot *h = (struct hot *)(b + 128);
    int16_t *data = (int16_t *)(b + data_off);
    double *tsr = (double *)(b + ts_off);
    int16_t *rows = malloc(sizeof(int16_t) * chunk * channels);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;

    double t0 = now_s();
    uint64_t s = 0;
    while (s < (uint64_t)samples) {
        uint64_t n = (uint64_t)chunk;
        if (s + n > (uint64_t)samples) n = samples - s;
        if (paced) {
            double due = t0 + (double)(s + n) / srate, left = due - now_s();
            if (left > 0) {
                struct timespec d = {(time_t)left, (long)((left - (time_t)left) * 1e9)};
                nanosleep(&d, NULL);
            }
        }
        for (uint64_t j = 0; j < n; j++)
            for (long c = 0; c < channels; c++)
                rows[j * channels + c] = (int16_t)(((s + j) * 7 + c) % 32000);
        double newest = now_s();
        __atomic_store_n(&h->write_start, s + n, __ATOMIC_RELAXED); /* claim */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        for (uint64_t j = 0; j < n; j++) { /* row by row: simplest way around the wrap */
            uint64_t row = (s + j) % capacity;
            memcpy(data + row * channels, rows + j * channels, sizeof(int16_t) * channels);
            tsr[row] = newest - (double)(n - 1 - j) / srate;
        }
        __atomic_store_n(&h->write_end, s + n, __ATOMIC_RELEASE); /* commit */
        h->last_commit = now_s();
        __atomic_add_fetch(&h->notify, 1, __ATOMIC_RELEASE);
        syscall(SYS_futex, &h->notify, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
        s += n;
    }
    printf("done %llu\n", (unsigned long long)s);
    fflush(stdout);
    if (hold && !fgets(line, sizeof line, stdin)) { /* EOF also closes */ }

    put_u32(b, 76, 2); /* state = closed: attached readers see it */
    __atomic_add_fetch(&h->notify, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &h->notify, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    unlink(path_final);
    munmap(b, total);
    close(fd);
    free(rows);
    return 0;
}
