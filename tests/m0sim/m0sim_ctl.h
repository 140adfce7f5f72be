/* m0sim_ctl.h - internal control API of m0d.
 *
 * These functions act on the running service and may be called from any
 * thread (a control library linked into m0d calls them from its own).
 * They return -EAGAIN until the service is up.  Unless said otherwise they
 * return 0 or a negative errno. */
#ifndef M0SIM_CTL_H
#define M0SIM_CTL_H

#include "m0sim.h"

#include <stddef.h>
#include <stdint.h>

/** Handler threads stop taking FOMs off the run queues.  Returns once no
 * FOM is executing; arriving requests keep queueing, none is lost. */
int m0sim_reqh_pause(void);
/** Handler threads take FOMs again. */
int m0sim_reqh_resume(void);

/** Closes the TCP connection carrying session session_id.  The server
 * terminates the session and connection; the client reconnects and
 * establishes a new session.  -ENOENT if no such open session. */
int m0sim_session_reset(uint64_t session_id);

/** Sets the B-tree record key (printable, 1..255 bytes) to value (at most
 * 2048 bytes) in one WAL transaction. */
int m0sim_meta_update(const char *key, const char *value);
/** Reads such a record into value (NUL-terminated); -ENOENT if absent. */
int m0sim_meta_get(const char *key, char *value, size_t len);

/** Rebuilds one block from the other blocks of its stripe and the parity,
 * checks it against its stored checksum and writes it back.  fid is an
 * object fid (block = object data block number) or a cob fid (block = block
 * number within that cob, parity cob included).  msg gets a description
 * ("repaired ...", "block is healthy ..." or the error). */
int m0sim_block_repair(struct m0_fid fid, uint64_t block, char *msg,
		       size_t msglen);

/** Sets the HA state of a service: service "ioservice" (read, write),
 * "mdservice" (create, delete, getattr, objinfo) or "sss" (stats); state
 * "online", "offline" or "failed".  Requests to a service that is not
 * online are refused with an error reply naming the service and state. */
int m0sim_service_state(const char *service, const char *state);

/* The JSON functions return the length of the whole JSON text (like
 * snprintf: a result >= len means it was truncated) or a negative errno. */

/** Cobs of an object (object fid or one of its cob fids). */
int m0sim_cob_list(struct m0_fid fid, char *json, size_t len);
/** Service statistics (the same JSON as the stats request). */
int m0sim_stats_json(char *buf, size_t len);
/** Queued and blocked FOMs of every locality. */
int m0sim_queue_json(char *buf, size_t len);

enum { M0SIM_ADMIN_OUT_MAX = 1 << 20 };

/** Runs one text command (what the ADMIN request carries):
 *   pause | resume | reset SESSION_ID | meta KEY VALUE | meta-get KEY |
 *   repair FID BLOCK | service NAME STATE | coblist FID | stats | queue
 * out gets the command's output (JSON or text). */
int m0sim_admin(const char *line, char *out, size_t outlen);

/** m0d: the service is up (or going down). */
void m0sim_ctl_ready(int ready);

/** B-tree node of the metadata tree whose page contains address addr, as
 * JSON (length, like snprintf); -ENOENT when addr is in no node. */
int m0sim_btree_node_json(uint64_t addr, char *json, size_t len);

/* ------------------------------------------------- control socket (control.c) */

/** m0d's flags as loaded, shown by the "config" report section. */
struct m0sim_control_cfg {
	unsigned long cc_port;         /* --port as given (0: any) */
	const char *cc_endpoint;       /* the bound endpoint */
	const char *cc_data;           /* --data */
	unsigned long cc_devices;      /* --devices as given */
	uint32_t cc_store_devices;     /* data devices of the store */
	unsigned long cc_localities;   /* --localities */
	unsigned long cc_delay_us;     /* --handler-delay-us */
	bool cc_sync;                  /* not --no-sync */
	bool cc_trace;                 /* --trace */
	const char *cc_report_dir;     /* --report-dir (NULL: stderr) */
	const char *cc_socket_dir;     /* --control-dir (NULL: library default) */
};

/** Starts m0d's control server (ri-control, target name "m0d") with its
 * commands, report sections and the SIGUSR2 report.  0 or -errno with a
 * message in err; -ENOTSUP when m0d was built without ri-control. */
int m0sim_control_start(const struct m0sim_control_cfg *cfg, char *err,
			size_t errlen);
/** Path of the control socket, NULL when not started. */
const char *m0sim_control_socket(void);
/** Stops the control server (waits for running commands). */
void m0sim_control_stop(void);

#endif /* M0SIM_CTL_H */
