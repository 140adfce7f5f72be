/*
 * c_target.c - a small C target using ri-control.
 *
 * Registers a mutating command `counter.add {"n": N}`, a read-only
 * `counter.get`, and a report section `counter`. It prints its socket path
 * on stdout, keeps its main thread busy counting ticks, and stops when its
 * standard input reaches end-of-file (then it calls ri_ctl_stop). A line
 * "exit" on standard input makes it call exit(3) without ri_ctl_stop, to
 * show that the library still removes its socket at exit.
 *
 * Build (from the workspace root):
 *   cargo build -p ri-control
 *   cc -std=c11 -Wall -Wextra -Iri-control/include ri-control/examples/c_target.c \
 *      target/debug/libri_control.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc \
 *      -o /tmp/c_target
 * Run:
 *   /tmp/c_target [--name NAME] [--socket-dir DIR] [--audit-log FILE]
 *                 [--report-dir DIR]
 *   (in another shell, as the same user or root)
 *   echo '{"v":1,"id":1,"cmd":"counter.add","args":{"n":5},"mutate":true}' \
 *     | socat - UNIX-CONNECT:/run/ri/c_target.<pid>.sock
 * --report-dir enables the SIGUSR2 report (kill -USR2 <pid>).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ri_control.h"

static atomic_llong counter;
static atomic_llong ticks;

/* counter.add: args are validated by the library ({"n": integer}). */
static int counter_add(void *user_data, const char *args_json,
                       const struct ri_ctl_peer *peer, char *out,
                       size_t out_cap)
{
    (void)user_data;
    const char *p = strstr(args_json, "\"n\":");
    if (p == NULL) {
        snprintf(out, out_cap, "missing n");
        return 1;
    }
    errno = 0;
    long long n = strtoll(p + 4, NULL, 10);
    if (errno != 0) {
        snprintf(out, out_cap, "n out of range");
        return 1;
    }
    if (n == 0) {
        snprintf(out, out_cap, "refusing to add zero");
        return 2;
    }
    long long now = atomic_fetch_add(&counter, n) + n;
    snprintf(out, out_cap, "{\"value\":%lld,\"by_uid\":%lld}", now,
             (long long)peer->uid);
    return 0;
}

/* counter.get: read-only, no arguments. */
static int counter_get(void *user_data, const char *args_json,
                       const struct ri_ctl_peer *peer, char *out,
                       size_t out_cap)
{
    (void)user_data;
    (void)args_json;
    (void)peer;
    snprintf(out, out_cap, "{\"value\":%lld}", atomic_load(&counter));
    return 0;
}

/* Report section: JSON with the counter and the main thread's ticks. */
static int counter_section(void *user_data, char *out, size_t out_cap)
{
    const char *label = user_data;
    snprintf(out, out_cap, "{\"label\":\"%s\",\"value\":%lld,\"ticks\":%lld}",
             label, atomic_load(&counter), atomic_load(&ticks));
    return 0;
}

int main(int argc, char **argv)
{
    const char *name = "c_target";
    struct ri_ctl_options opts;
    ri_ctl_options_init(&opts);
    if (opts.struct_size != sizeof opts) {
        fprintf(stderr, "ri_control.h does not match the library\n");
        return 1;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--name") == 0) {
            name = argv[i + 1];
        } else if (strcmp(argv[i], "--socket-dir") == 0) {
            opts.socket_dir = argv[i + 1];
        } else if (strcmp(argv[i], "--audit-log") == 0) {
            opts.audit_log = argv[i + 1];
        } else if (strcmp(argv[i], "--report-dir") == 0) {
            opts.report_dir = argv[i + 1];
            opts.flags |= RI_CTL_OPT_SIGUSR2_REPORT;
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }

    struct ri_ctl *h = ri_ctl_start(name, &opts);
    if (h == NULL) {
        fprintf(stderr, "ri_ctl_start: %s (errno %d)\n", ri_ctl_last_error(),
                errno);
        return 1;
    }
    static const char *schema =
        "{\"type\":\"object\","
        "\"properties\":{\"n\":{\"type\":\"integer\",\"description\":\"amount to add\"}},"
        "\"required\":[\"n\"]}";
    if (ri_ctl_register(h, "counter.add", "Add n to the counter", schema,
                        RI_CTL_MUTATES, counter_add, NULL) != 0 ||
        ri_ctl_register(h, "counter.get", "Read the counter", NULL, 0,
                        counter_get, NULL) != 0 ||
        ri_ctl_register_report_section(h, "counter", counter_section,
                                       (void *)"demo") != 0) {
        fprintf(stderr, "register: %s\n", ri_ctl_last_error());
        ri_ctl_stop(h);
        return 1;
    }
    /* Registering twice must fail cleanly with EEXIST. */
    if (ri_ctl_register(h, "counter.get", NULL, NULL, 0, counter_get, NULL) == 0 ||
        errno != EEXIST) {
        fprintf(stderr, "duplicate registration was not refused\n");
        ri_ctl_stop(h);
        return 1;
    }

    printf("%s\n", ri_ctl_socket_path(h));
    fflush(stdout);

    /* The target's own work: count ticks until stdin closes. */
    struct pollfd in = {.fd = 0, .events = POLLIN};
    char buf[256];
    for (;;) {
        atomic_fetch_add(&ticks, 1);
        int rc = poll(&in, 1, 10);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n <= 0)
                break;
            if (n >= 4 && memcmp(buf, "exit", 4) == 0)
                exit(3);
        }
    }
    ri_ctl_stop(h);
    printf("stopped counter=%lld\n", atomic_load(&counter));
    return 0;
}
