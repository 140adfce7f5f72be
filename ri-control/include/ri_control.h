/*
 * ri_control.h - C API of ri-control, the in-target control library of `ri`.
 *
 * A target links libri_control (static or shared) and starts a control
 * server. The library opens a Unix socket at /run/ri/<name>.<pid>.sock
 * (falling back to $XDG_RUNTIME_DIR/ri/ and /tmp/ri-<uid>/), mode 0600, and
 * serves the commands the target registers, on its own threads. `ri ctl`
 * (or socat + jq, see docs/CONTROL-PROTOCOL.md) talks to it.
 *
 * Safety model:
 *   - only the target's own uid and root may connect (SO_PEERCRED);
 *   - commands registered with RI_CTL_MUTATES run only when the request
 *     carries "mutate": true, and every attempt is appended to an audit
 *     log (JSON lines) and kept in memory (built-in command "audit");
 *   - handlers run on library threads, never on the target's. Read-only
 *     handlers may run concurrently with each other; mutating handlers are
 *     serialized by the library (one at a time). A handler must therefore
 *     be thread-safe with respect to the target's own threads.
 *   - The library's threads block asynchronous signals, so the target's
 *     signal handlers keep running on the target's threads.
 *
 * Errors: functions return NULL or -1, set errno, and keep a message for
 * ri_ctl_last_error(). No function unwinds or aborts on bad input.
 *
 * Build (from the workspace root):
 *   cargo build -p ri-control --release
 *   cc -Iri-control/include app.c target/release/libri_control.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o app
 * (the list of system libraries is printed by
 *  `cargo rustc -p ri-control --lib -- --print native-static-libs`).
 */
#ifndef RI_CONTROL_H
#define RI_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol version spoken by this library. */
#define RI_CTL_PROTOCOL_VERSION 1

/* ri_ctl_register() flags: the command changes the target. */
#define RI_CTL_MUTATES 1u

/* ri_ctl_options.flags: write a text report on SIGUSR2 (to report_dir, or
 * stderr when report_dir is NULL). The handler only wakes the control
 * thread (async-signal-safe); the report is written there. Refused (EBUSY)
 * if the process already installed its own SIGUSR2 handler. */
#define RI_CTL_OPT_SIGUSR2_REPORT 1u

/* ri_ctl_peer.transport values. */
#define RI_CTL_TRANSPORT_UNIX 1
#define RI_CTL_TRANSPORT_TCP 2

/* Opaque handle of a running control server. */
struct ri_ctl;

/* Start options. Always initialise with ri_ctl_options_init(); zero or
 * NULL fields mean "default". */
struct ri_ctl_options {
    uint32_t struct_size;       /* set by ri_ctl_options_init() */
    uint32_t flags;             /* RI_CTL_OPT_* */
    const char *socket_dir;     /* NULL: /run/ri, $XDG_RUNTIME_DIR/ri, /tmp/ri-<uid> */
    const char *audit_log;      /* NULL: <socket dir>/<name>.audit.jsonl */
    const char *tcp_addr;       /* "host:port"; NULL: 127.0.0.1:0 when TCP is on */
    const char *tcp_token_file; /* non-NULL turns TCP on; file mode 0600, >= 16 bytes */
    const char *report_dir;     /* SIGUSR2 reports go here; NULL: stderr */
    uint32_t max_connections;   /* 0: 128; extra connections get "busy" */
    uint32_t read_timeout_ms;   /* 0: 30000; time to deliver one request */
    uint32_t max_frame_size;    /* 0: 1 MiB; 1024 .. 16 MiB-1 */
    uint32_t handler_buf_size;  /* 0: 64 KiB; size of the handlers' `out` */
};

/* Who sent a request. -1 means unknown (TCP peers have no uid/pid). */
struct ri_ctl_peer {
    int32_t transport; /* RI_CTL_TRANSPORT_* */
    int32_t pid;
    int64_t uid;
};

/*
 * Command handler.
 *   args_json  NUL-terminated JSON object, already validated against the
 *              command's schema, defaults filled in.
 *   peer       the sender.
 *   out        zeroed buffer of out_cap bytes owned by the library.
 * On success write a NUL-terminated JSON value (e.g. "{\"value\":3}"; an
 * empty string means null) and return 0. On failure write a NUL-terminated
 * message and return non-zero; the client gets error "handler_error".
 * Output without a NUL within out_cap, or invalid JSON on success, is also
 * reported as "handler_error". Runs on a library thread.
 */
typedef int (*ri_ctl_handler_fn)(void *user_data, const char *args_json,
                                 const struct ri_ctl_peer *peer, char *out,
                                 size_t out_cap);

/*
 * Report section: write a NUL-terminated JSON value into out and return 0.
 * Text that is not JSON is included as a string. A non-zero return becomes
 * {"error": <text>, "code": <rc>}.
 */
typedef int (*ri_ctl_report_fn)(void *user_data, char *out, size_t out_cap);

/* Fills *opts with defaults. */
void ri_ctl_options_init(struct ri_ctl_options *opts);

/*
 * Starts the control server of target `name` ([A-Za-z0-9_.-], 1-64 chars).
 * opts may be NULL. Returns NULL with errno on failure, e.g. EINVAL (bad
 * name/option), EADDRINUSE (same name already served by this process),
 * EACCES (no usable socket directory, bad token file), EBUSY (SIGUSR2 in
 * use).
 */
struct ri_ctl *ri_ctl_start(const char *name, const struct ri_ctl_options *opts);

/*
 * Registers a command.
 *   name              [A-Za-z0-9_.:-], 1-64 chars; not a built-in
 *                     (ping, version, commands, report, audit).
 *   help              one line, may be NULL.
 *   args_schema_json  NULL (no arguments) or a JSON-Schema subset, e.g.
 *                     {"type":"object","properties":{"n":{"type":"integer"}},
 *                      "required":["n"]}. See docs/CONTROL-PROTOCOL.md.
 *   flags             0 or RI_CTL_MUTATES.
 *   handler/user_data must stay valid until unregistered or stopped.
 * Returns 0, or -1 with errno EEXIST (taken) or EINVAL.
 */
int ri_ctl_register(struct ri_ctl *h, const char *name, const char *help,
                    const char *args_schema_json, uint32_t flags,
                    ri_ctl_handler_fn handler, void *user_data);

/* Removes a command (running calls finish). 0, or -1 with errno ENOENT. */
int ri_ctl_unregister(struct ri_ctl *h, const char *name);

/* Registers a section of the report (built-in "report" and SIGUSR2). */
int ri_ctl_register_report_section(struct ri_ctl *h, const char *name,
                                   ri_ctl_report_fn fn, void *user_data);

/* Path of the Unix socket; valid until ri_ctl_stop(). */
const char *ri_ctl_socket_path(const struct ri_ctl *h);

/* Bound TCP port, or 0 when TCP is off. */
int ri_ctl_tcp_port(const struct ri_ctl *h);

/* Writes a text report now (to report_dir, else stderr). 0 or -1. */
int ri_ctl_write_report(struct ri_ctl *h);

/*
 * Stops the server: closes connections, waits for running handlers (so it
 * must not be called from a handler or report section),
 * removes the socket, restores SIGUSR2, frees h. NULL is ignored. The
 * socket is also removed at exit() if the target never calls this.
 */
void ri_ctl_stop(struct ri_ctl *h);

/* Message of this thread's last failure ("" if none); valid until the
 * next failing call on this thread. */
const char *ri_ctl_last_error(void);

/* Library version, e.g. "0.1.0". */
const char *ri_ctl_version(void);

#ifdef __cplusplus
}
#endif

#endif /* RI_CONTROL_H */
