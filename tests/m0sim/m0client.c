/* m0client.c - m0sim client and load generator.
 *
 *   m0client --endpoint 127.0.0.1:PORT create|write|read|delete|getattr NAME [DATA]
 *   m0client --endpoint E stats | objinfo NAME | admin COMMAND...
 *   m0client --endpoint E load --rate R --concurrency C --duration S
 *            --objects K [--size BYTES] [--prefix P] [--cleanup]
 *   m0client fid NAME [--devices N]          (local: the name's ids)
 *
 * The client side of the rpc calls lives here: a connection is a TCP
 * socket, established with CONN_ESTABLISH (the server assigns the sender
 * id) and SESSION_ESTABLISH (the session id); every request carries the
 * next xid of the session.  A client whose connection breaks reconnects
 * and re-sends the request (at most 3 attempts). */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_CLIENT
#include "rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_SERVER = 1, EXIT_USAGE = 2, EXIT_CONN = 3 };
enum { MAX_DATA = 1 << 20 };

static int opt_timeout_s = 60;

/* ------------------------------------------------------- client rpc */

void m0sim_rpc_conn_put(struct m0_rpc_conn *conn)
{
	(void)conn;   /* client fops hold no connection reference */
}

/* Sends a connection-level item and waits for its reply. */
static int conn_call(struct m0_rpc_conn *conn, struct m0_fop *fop,
		     struct m0sim_wire_msg *reply, void **frame);

/** Client: connects to the server at ep. */
M0_PROBE int m0_rpc_conn_create(struct m0_rpc_conn *conn, struct m0_fid *svc_fid,
				struct m0_net_end_point *ep,
				struct m0_rpc_machine *m,
				uint64_t max_rpcs_in_flight, m0_time_t abs_timeout)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = opt_timeout_s };
	char ip[64];
	unsigned port;
	int fd, one = 1;

	(void)abs_timeout;
	memset(conn, 0, sizeof *conn);
	conn->c_fd = -1;
	if (m0sim_ep_parse(ep->nep_addr, ip, sizeof ip, &port) != 0 ||
	    inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	conn->c_fd = fd;
	conn->c_rpc_machine = m;
	conn->c_max_rpcs_in_flight = max_rpcs_in_flight;
	if (svc_fid != NULL)
		conn->c_svc_fid = *svc_fid;
	conn->c_ep = *ep;
	conn->c_ep.nep_addr = conn->c_ep.nep_addr_buf;
	conn->c_chan = (struct m0_rpc_chan){ &conn->c_ep, m };
	conn->c_rpcchan = &conn->c_chan;
	conn->c_state = M0_RPC_CONN_INITIALISED;
	conn->c_created = m0_time_now();
	return 0;
}

static int conn_item(struct m0_rpc_conn *conn, struct m0_fop_type *ft,
		     struct m0_rpc_session *session, struct m0sim_wire_msg *reply)
{
	struct m0_fop *fop = m0_fop_alloc(ft);
	void *frame = NULL;
	int rc;

	if (fop == NULL)
		return -ENOMEM;
	fop->f_item.ri_conn = conn;
	fop->f_item.ri_session = session;
	fop->f_item.ri_header.osr_sender_id = conn->c_sender_id;
	rc = conn_call(conn, fop, reply, &frame);
	m0_free(frame);   /* connection-level replies carry no data we keep */
	m0_fop_put(fop);
	if (rc == 0 && reply->wm_rc != 0)
		rc = reply->wm_rc;
	return rc;
}

/** Client: gets a sender id from the server. */
M0_PROBE int m0_rpc_conn_establish(struct m0_rpc_conn *conn, m0_time_t abs_timeout)
{
	struct m0sim_wire_msg reply;
	int rc;

	(void)abs_timeout;
	conn->c_state = M0_RPC_CONN_CONNECTING;
	rc = conn_item(conn, &m0_rpc_fop_conn_establish_fopt, NULL, &reply);
	if (rc != 0) {
		conn->c_state = M0_RPC_CONN_FAILED;
		return rc;
	}
	conn->c_sender_id = reply.wm_sender_id;
	conn->c_state = M0_RPC_CONN_ACTIVE;
	return 0;
}

/** Client: gets a session id from the server. */
M0_PROBE int m0_rpc_session_establish(struct m0_rpc_session *session,
				      m0_time_t abs_timeout)
{
	struct m0_rpc_conn *conn = session->s_conn;
	struct m0sim_wire_msg reply;
	int rc;

	(void)abs_timeout;
	session->s_state = M0_RPC_SESSION_ESTABLISHING;
	session->s_xid = 0;
	rc = conn_item(conn, &m0_rpc_fop_session_establish_fopt, NULL, &reply);
	if (rc != 0) {
		session->s_state = M0_RPC_SESSION_FAILED;
		return rc;
	}
	session->s_session_id = reply.wm_session_id;
	session->s_state = M0_RPC_SESSION_IDLE;
	conn->c_session = session;
	conn->c_nr_sessions = 1;
	return 0;
}

M0_PROBE int m0_rpc_session_terminate(struct m0_rpc_session *session,
				      m0_time_t abs_timeout)
{
	struct m0sim_wire_msg reply;
	int rc;

	(void)abs_timeout;
	session->s_state = M0_RPC_SESSION_TERMINATING;
	rc = conn_item(session->s_conn, &m0_rpc_fop_session_terminate_fopt,
		       session, &reply);
	session->s_state = M0_RPC_SESSION_TERMINATED;
	session->s_conn->c_nr_sessions = 0;
	return rc;
}

M0_PROBE int m0_rpc_conn_terminate(struct m0_rpc_conn *conn, m0_time_t abs_timeout)
{
	struct m0sim_wire_msg reply;
	int rc = 0;

	(void)abs_timeout;
	if (conn->c_state == M0_RPC_CONN_ACTIVE)
		rc = conn_item(conn, &m0_rpc_fop_conn_terminate_fopt, NULL, &reply);
	if (conn->c_fd >= 0)
		close(conn->c_fd);
	conn->c_fd = -1;
	conn->c_state = M0_RPC_CONN_TERMINATED;
	return rc;
}

/** Client: sends a request item.  Items of a session get the session's
 * sender id, session id and next xid. */
M0_PROBE int m0_rpc_post(struct m0_rpc_item *item)
{
	struct m0_rpc_session *s = item->ri_session;
	struct m0_rpc_conn *conn = s != NULL ? s->s_conn : item->ri_conn;
	struct m0sim_wire_msg msg;

	if (conn == NULL || conn->c_fd < 0)
		return -ENOTCONN;
	item->ri_conn = conn;
	if (s != NULL) {
		item->ri_header.osr_sender_id = conn->c_sender_id;
		item->ri_header.osr_session_id = s->s_session_id;
		item->ri_header.osr_xid = ++s->s_xid;
	}
	item->ri_rpc_time = m0_time_now();
	m0sim_wire_from_item(&msg, m0_rpc_item_to_fop(item), false);
	item->ri_size = M0SIM_WIRE_HDR + 8 + msg.wm_name.b_nob + msg.wm_data.b_nob;
	return m0sim_wire_send(conn->c_fd, &msg);
}

static int conn_call(struct m0_rpc_conn *conn, struct m0_fop *fop,
		     struct m0sim_wire_msg *reply, void **frame)
{
	const struct m0_rpc_item *item = &fop->f_item;
	size_t fsize;
	int rc;

	*frame = NULL;
	rc = m0_rpc_post(&fop->f_item);
	while (rc == 0) {
		rc = m0sim_wire_recv(conn->c_fd, reply, frame, &fsize);
		if (rc != 0)
			break;
		if ((reply->wm_flags & M0SIM_WIRE_REPLY) &&
		    reply->wm_xid == item->ri_header.osr_xid &&
		    reply->wm_opcode == item->ri_type->rit_opcode)
			return 0;
		m0_free(*frame);   /* not ours (stale): skip */
		*frame = NULL;
	}
	return rc;
}

/* ------------------------------------------------------------- client */

struct client {
	struct m0_rpc_machine cl_mach;
	struct m0_rpc_conn cl_conn;
	struct m0_rpc_session cl_sess;
	struct m0_net_end_point cl_ep;
	bool cl_connected;
	bool cl_ever_connected;
	uint64_t cl_reconnects;
	char cl_err[256];
};

static void client_init(struct client *cl, const char *ep)
{
	char ip[64];
	unsigned port = 0;

	memset(cl, 0, sizeof *cl);
	cl->cl_conn.c_fd = -1;
	if (m0sim_ep_parse(ep, ip, sizeof ip, &port) == 0)
		m0sim_ep_set(&cl->cl_ep, ip, port);
	else
		m0sim_ep_set(&cl->cl_ep, "invalid", 0);
}

static void client_drop(struct client *cl)
{
	if (cl->cl_conn.c_fd >= 0)
		close(cl->cl_conn.c_fd);
	cl->cl_conn.c_fd = -1;
	cl->cl_conn.c_state = M0_RPC_CONN_FAILED;
	cl->cl_connected = false;
}

static int client_connect(struct client *cl)
{
	int rc, tries;

	/* The server may be restarting or just reset us: try for ~2 s. */
	for (tries = 0; tries < 20; tries++) {
		if (tries > 0)
			usleep(100000);
		rc = m0_rpc_conn_create(&cl->cl_conn, NULL, &cl->cl_ep, &cl->cl_mach,
					1, 0);
		if (rc != 0)
			continue;
		rc = m0_rpc_conn_establish(&cl->cl_conn, 0);
		if (rc == 0) {
			memset(&cl->cl_sess, 0, sizeof cl->cl_sess);
			cl->cl_sess.s_conn = &cl->cl_conn;
			rc = m0_rpc_session_establish(&cl->cl_sess, 0);
		}
		if (rc == 0)
			break;
		client_drop(cl);
	}
	if (rc != 0) {
		snprintf(cl->cl_err, sizeof cl->cl_err, "cannot connect to %s: %s",
			 cl->cl_ep.nep_addr, strerror(-rc));
		return rc;
	}
	if (cl->cl_ever_connected)
		cl->cl_reconnects++;
	cl->cl_ever_connected = true;
	cl->cl_connected = true;
	return 0;
}

static void client_close(struct client *cl)
{
	if (!cl->cl_connected)
		return;
	m0_rpc_session_terminate(&cl->cl_sess, 0);
	m0_rpc_conn_terminate(&cl->cl_conn, 0);
	cl->cl_connected = false;
}

/** One request.  Returns 0 when a reply arrived (its rc in *app_rc, its
 * data in *out pointing into *frame, to m0_free()), or the transport
 * error.  *retried tells the request was sent more than once. */
static int client_call(struct client *cl, struct m0_fop_type *ft,
		       const char *name, const void *data, size_t dlen,
		       int *app_rc, struct m0_buf *out, void **frame,
		       bool *retried)
{
	int attempt, rc = -ENOTCONN;

	*frame = NULL;
	*retried = false;
	for (attempt = 0; attempt < 3; attempt++) {
		struct m0sim_wire_msg reply;
		struct m0_fop *fop;

		if (attempt > 0)
			*retried = true;
		if (!cl->cl_connected) {
			rc = client_connect(cl);
			if (rc != 0)
				return rc;
		}
		fop = m0_fop_alloc(ft);
		if (fop == NULL)
			return -ENOMEM;
		fop->f_body.fb_name = (struct m0_buf){ name ? strlen(name) : 0,
						       (void *)name };
		fop->f_body.fb_data = (struct m0_buf){ dlen, (void *)data };
		fop->f_item.ri_session = &cl->cl_sess;
		rc = conn_call(&cl->cl_conn, fop, &reply, frame);
		m0_fop_put(fop);
		if (rc == 0) {
			*app_rc = reply.wm_rc;
			*out = reply.wm_data;
			if (reply.wm_rc == -ENOTCONN) {
				/* The server lost our session: start over. */
				m0_free(*frame);
				*frame = NULL;
				client_drop(cl);
				rc = -ENOTCONN;
				continue;
			}
			return 0;
		}
		snprintf(cl->cl_err, sizeof cl->cl_err, "%s: %s", ft->ft_name,
			 strerror(-rc));
		client_drop(cl);
		if (rc == -ETIMEDOUT)
			break;   /* the server is slow, not gone: do not re-send */
	}
	return rc;
}

/* ------------------------------------------------------------- commands */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: m0client --endpoint HOST:PORT COMMAND\n"
		"  create NAME | write NAME DATA|-|@FILE | read NAME | delete NAME\n"
		"  getattr NAME | objinfo NAME | stats | admin COMMAND...\n"
		"  load --rate R --concurrency C --duration S --objects K\n"
		"       [--size BYTES] [--prefix P] [--cleanup]\n"
		"m0client fid NAME [--devices N]\n"
		"options: --timeout SEC (default 60)\n");
}

static int read_data(const char *arg, void **data, size_t *len)
{
	FILE *f;
	char *buf;
	size_t n;

	if (strcmp(arg, "-") != 0 && arg[0] != '@') {
		*data = (void *)arg;
		*len = strlen(arg);
		return 0;
	}
	f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
	if (f == NULL)
		return -errno;
	buf = malloc(MAX_DATA + 1);
	if (buf == NULL)
		return -ENOMEM;
	n = fread(buf, 1, MAX_DATA + 1, f);
	if (f != stdin)
		fclose(f);
	if (n > MAX_DATA) {
		free(buf);
		return -EFBIG;
	}
	*data = buf;
	*len = n;
	return 0;
}

static int cmd_fid(int argc, char **argv)
{
	struct m0_uint128 id;
	struct m0_fid gob, cob;
	unsigned long devices = 3;
	const char *name;
	struct m0sim_sbuf sb;
	char esc[6 * 256 + 3];
	uint32_t d;

	if (argc < 2)
		return EXIT_USAGE;
	name = argv[1];
	if (argc == 4 && strcmp(argv[2], "--devices") == 0)
		devices = strtoul(argv[3], NULL, 10);
	else if (argc != 2)
		return EXIT_USAGE;
	if (strlen(name) > 256 || devices < 1 || devices > 16)
		return EXIT_USAGE;
	m0sim_name_to_id(name, strlen(name), &id);
	m0_fid_gob_make(&gob, (uint32_t)id.u_hi, id.u_lo);
	m0sim_sb_init(&sb, esc, sizeof esc);
	m0sim_sb_json_str(&sb, name, strlen(name));
	printf("{\"name\":%s,\"id\":\"%" PRIx64 ":%" PRIx64 "\",\"fid\":\""
	       FID_F "\",\"cobs\":[", esc, id.u_hi, id.u_lo, FID_P(&gob));
	for (d = 0; d <= devices; d++) {
		m0_fid_convert_gob2cob(&gob, &cob, d);
		printf("%s{\"device\":%u,\"cob_fid\":\"" FID_F "\"}", d ? "," : "", d,
		       FID_P(&cob));
	}
	printf("]}\n");
	return 0;
}

static int cmd_single(struct client *cl, int argc, char **argv)
{
	static const struct {
		const char *cmd;
		struct m0_fop_type *ft;
		int nargs;   /* after the command */
	} cmds[] = {
		{ "create", &m0_fop_cob_create_fopt, 1 },
		{ "write", &m0_fop_cob_writev_fopt, 2 },
		{ "read", &m0_fop_cob_readv_fopt, 1 },
		{ "delete", &m0_fop_cob_delete_fopt, 1 },
		{ "getattr", &m0_fop_cob_getattr_fopt, 1 },
		{ "objinfo", &m0sim_fop_objinfo_fopt, 1 },
		{ "stats", &m0sim_fop_stats_fopt, 0 },
	};
	const char *name = NULL;
	void *data = NULL, *frame = NULL;
	size_t dlen = 0, i;
	struct m0_buf out;
	char *line = NULL;
	bool retried, data_alloc = false;
	int rc, app_rc = 0;
	struct m0_fop_type *ft = NULL;

	if (strcmp(argv[0], "admin") == 0) {
		size_t len = 0;
		int a;

		if (argc < 2)
			return EXIT_USAGE;
		for (a = 1; a < argc; a++)
			len += strlen(argv[a]) + 1;
		line = calloc(1, len + 1);
		if (line == NULL)
			return EXIT_CONN;
		for (a = 1; a < argc; a++) {
			strcat(line, argv[a]);
			if (a + 1 < argc)
				strcat(line, " ");
		}
		ft = &m0sim_fop_admin_fopt;
		data = line;
		dlen = strlen(line);
	} else {
		for (i = 0; i < M0_ARRAY_SIZE(cmds); i++) {
			if (strcmp(argv[0], cmds[i].cmd) == 0)
				break;
		}
		if (i == M0_ARRAY_SIZE(cmds) || argc != cmds[i].nargs + 1)
			return EXIT_USAGE;
		ft = cmds[i].ft;
		if (cmds[i].nargs >= 1)
			name = argv[1];
		if (cmds[i].nargs == 2) {
			rc = read_data(argv[2], &data, &dlen);
			if (rc != 0) {
				fprintf(stderr, "m0client: %s: %s\n", argv[2], strerror(-rc));
				return EXIT_USAGE;
			}
			data_alloc = data != argv[2];
		}
	}
	rc = client_call(cl, ft, name, data, dlen, &app_rc, &out, &frame, &retried);
	if (rc != 0) {
		fprintf(stderr, "m0client: %s\n", cl->cl_err);
		rc = EXIT_CONN;
		goto out;
	}
	if (app_rc != 0) {
		fprintf(stderr, "m0client: %s%s%s: %.*s (rc=%d %s)\n", ft->ft_name,
			name ? " " : "", name ? name : "", (int)out.b_nob,
			(const char *)out.b_addr, app_rc, strerror(-app_rc));
		rc = EXIT_SERVER;
		goto out;
	}
	if (ft == &m0_fop_cob_readv_fopt) {
		fwrite(out.b_addr, 1, out.b_nob, stdout);
	} else if (ft == &m0_fop_cob_create_fopt) {
		printf("created %s\n", name);
	} else if (ft == &m0_fop_cob_writev_fopt) {
		printf("wrote %zu bytes to %s\n", dlen, name);
	} else if (ft == &m0_fop_cob_delete_fopt) {
		printf("deleted %s\n", name);
	} else {
		fwrite(out.b_addr, 1, out.b_nob, stdout);
		printf("\n");
	}
	rc = 0;
out:
	m0_free(frame);
	if (data_alloc)
		free(data);
	free(line);
	return rc;
}

/* ----------------------------------------------------------------- load */

enum { OP_CREATE, OP_WRITE, OP_READ, OP_DELETE, OP_GETATTR, OP_NR };
static const char *const op_names[OP_NR] = { "create", "write", "read",
					     "delete", "getattr" };
static struct m0_fop_type *const op_fopt[OP_NR] = {
	&m0_fop_cob_create_fopt, &m0_fop_cob_writev_fopt, &m0_fop_cob_readv_fopt,
	&m0_fop_cob_delete_fopt, &m0_fop_cob_getattr_fopt,
};

struct load_cfg {
	const char *lc_ep;
	double lc_rate;
	int lc_conc;
	double lc_duration;
	int lc_objects;
	size_t lc_size;
	char lc_prefix[64];
	bool lc_cleanup;
};

struct load_obj {
	bool lo_exists;
	bool lo_written;
	uint64_t lo_version;
	size_t lo_size;
};

struct worker {
	pthread_t w_thread;
	int w_idx;
	const struct load_cfg *w_cfg;
	struct client w_cl;
	struct load_obj *w_objs;   /* indexed by object number */
	uint64_t w_rng;
	uint64_t w_ops[OP_NR];
	uint64_t w_errors[OP_NR];
	uint64_t w_transport_failures;
	uint64_t w_retries;
	uint64_t w_verify_failures;
	uint64_t w_lat_sum;
	uint64_t w_lat_max;
	char w_last_error[256];
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void obj_name(const struct load_cfg *cfg, int k, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%d", cfg->lc_prefix, k);
}

/* Deterministic content of a version of an object, to verify reads. */
static void fill_pattern(uint8_t *buf, size_t len, const char *name,
			 uint64_t version)
{
	uint64_t s = m0sim_fnv1a64(M0SIM_ID_LO_BASIS, name, strlen(name)) ^
		(version * 0x9e3779b97f4a7c15ULL);
	size_t i;

	for (i = 0; i < len; i++) {
		if (i % 8 == 0)
			rng_next(&s);
		buf[i] = (uint8_t)(s >> (8 * (i % 8)));
	}
}

static void load_op(struct worker *w, int op, int k, uint8_t *buf, uint8_t *cmp)
{
	const struct load_cfg *cfg = w->w_cfg;
	struct load_obj *o = &w->w_objs[k];
	char name[128];
	struct m0_buf out;
	void *frame = NULL;
	size_t dlen = 0;
	m0_time_t t0;
	bool retried, bad = false;
	int rc, app_rc = 0;

	obj_name(cfg, k, name, sizeof name);
	if (op == OP_WRITE) {
		dlen = cfg->lc_size;
		fill_pattern(buf, dlen, name, o->lo_version + 1);
	}
	t0 = m0_time_now();
	rc = client_call(&w->w_cl, op_fopt[op], name, buf, dlen, &app_rc, &out,
			 &frame, &retried);
	if (retried)
		w->w_retries++;
	if (rc != 0) {
		w->w_transport_failures++;
		w->w_errors[op]++;
		snprintf(w->w_last_error, sizeof w->w_last_error, "%s", w->w_cl.cl_err);
		return;
	}
	{
		uint64_t lat = m0_time_now() - t0;

		w->w_lat_sum += lat;
		if (lat > w->w_lat_max)
			w->w_lat_max = lat;
	}
	w->w_ops[op]++;
	/* A re-sent create or delete may find its own first attempt done. */
	if (retried && ((op == OP_CREATE && app_rc == -EEXIST) ||
			(op == OP_DELETE && app_rc == -ENOENT)))
		app_rc = 0;
	if (app_rc == 0) {
		switch (op) {
		case OP_CREATE:
			o->lo_exists = true;
			o->lo_written = false;
			break;
		case OP_WRITE:
			o->lo_written = true;
			o->lo_version++;
			o->lo_size = dlen;
			break;
		case OP_READ:
			fill_pattern(cmp, o->lo_size, name, o->lo_version);
			if (out.b_nob != o->lo_size ||
			    memcmp(out.b_addr, cmp, o->lo_size) != 0) {
				bad = true;
				w->w_verify_failures++;
				snprintf(w->w_last_error, sizeof w->w_last_error,
					 "read %s: data differs from what was written", name);
			}
			break;
		case OP_DELETE:
			o->lo_exists = o->lo_written = false;
			break;
		default:
			break;
		}
	} else {
		snprintf(w->w_last_error, sizeof w->w_last_error, "%s %s: %.*s (rc=%d)",
			 op_names[op], name, (int)M0_MIN(out.b_nob, 160),
			 (const char *)out.b_addr, app_rc);
		/* Resynchronise with the server's view. */
		if (app_rc == -EEXIST)
			o->lo_exists = true;
		if (app_rc == -ENOENT)
			o->lo_exists = o->lo_written = false;
	}
	if (app_rc != 0 || bad)
		w->w_errors[op]++;
	m0_free(frame);
}

static void *load_worker(void *arg)
{
	struct worker *w = arg;
	const struct load_cfg *cfg = w->w_cfg;
	uint8_t *buf = malloc(cfg->lc_size + 1), *cmp = malloc(cfg->lc_size + 1);
	int owned = 0, k;
	m0_time_t start = m0_time_now();
	m0_time_t end = start + (m0_time_t)(cfg->lc_duration * 1e9);
	m0_time_t interval = cfg->lc_rate > 0 ?
		(m0_time_t)(1e9 * cfg->lc_conc / cfg->lc_rate) : 0;
	m0_time_t next = start + interval * (m0_time_t)w->w_idx / (m0_time_t)cfg->lc_conc;

	for (k = w->w_idx; k < cfg->lc_objects; k += cfg->lc_conc)
		owned++;
	if (buf == NULL || cmp == NULL || owned == 0)
		goto out;
	for (;;) {
		m0_time_t now = m0_time_now();
		struct load_obj *o;
		int op;

		if (interval > 0) {
			if (next >= end)
				break;
			if (next > now) {
				struct timespec ts = { (time_t)((next - now) / 1000000000ULL),
						       (long)((next - now) % 1000000000ULL) };
				nanosleep(&ts, NULL);
			} else if (now - next > 1000000000ULL) {
				next = now;   /* far behind: do not burst */
			}
			next += interval;
		} else if (now >= end) {
			break;
		}
		k = w->w_idx + cfg->lc_conc * (int)(rng_next(&w->w_rng) % (uint64_t)owned);
		o = &w->w_objs[k];
		if (!o->lo_exists) {
			op = OP_CREATE;
		} else if (!o->lo_written) {
			op = OP_WRITE;
		} else {
			unsigned r = (unsigned)(rng_next(&w->w_rng) % 100);

			op = r < 30 ? OP_WRITE : r < 70 ? OP_READ : r < 85 ? OP_GETATTR :
				OP_DELETE;
		}
		load_op(w, op, k, buf, cmp);
	}
	if (cfg->lc_cleanup) {
		for (k = w->w_idx; k < cfg->lc_objects; k += cfg->lc_conc) {
			if (w->w_objs[k].lo_exists)
				load_op(w, OP_DELETE, k, buf, cmp);
		}
	}
out:
	client_close(&w->w_cl);
	free(buf);
	free(cmp);
	return NULL;
}

static int cmd_load(const char *ep, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "rate", required_argument, NULL, 'r' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'd' },
		{ "objects", required_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 's' },
		{ "prefix", required_argument, NULL, 'p' },
		{ "cleanup", no_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	struct load_cfg cfg = { .lc_ep = ep, .lc_rate = 100, .lc_conc = 1,
				.lc_duration = 5, .lc_objects = 16, .lc_size = 4096 };
	struct load_obj *objs;
	struct worker *ws;
	uint64_t ops[OP_NR] = { 0 }, errs[OP_NR] = { 0 }, total = 0, terr = 0;
	uint64_t reconnects = 0, retries = 0, vfail = 0, tfail = 0, lat_sum = 0,
		lat_max = 0;
	const char *last_error = "";
	m0_time_t t0;
	double elapsed;
	int c, i;

	snprintf(cfg.lc_prefix, sizeof cfg.lc_prefix, "load%d", (int)getpid());
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			cfg.lc_rate = atof(optarg);
			break;
		case 'c':
			cfg.lc_conc = atoi(optarg);
			break;
		case 'd':
			cfg.lc_duration = atof(optarg);
			break;
		case 'k':
			cfg.lc_objects = atoi(optarg);
			break;
		case 's':
			cfg.lc_size = (size_t)strtoull(optarg, NULL, 10);
			break;
		case 'p':
			snprintf(cfg.lc_prefix, sizeof cfg.lc_prefix, "%s", optarg);
			break;
		case 'x':
			cfg.lc_cleanup = true;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc || cfg.lc_conc < 1 || cfg.lc_conc > 1024 ||
	    cfg.lc_objects < 1 || cfg.lc_duration <= 0 || cfg.lc_rate < 0 ||
	    cfg.lc_size > MAX_DATA)
		return EXIT_USAGE;

	objs = calloc((size_t)cfg.lc_objects, sizeof *objs);
	ws = calloc((size_t)cfg.lc_conc, sizeof *ws);
	if (objs == NULL || ws == NULL)
		return EXIT_CONN;
	t0 = m0_time_now();
	for (i = 0; i < cfg.lc_conc; i++) {
		ws[i].w_idx = i;
		ws[i].w_cfg = &cfg;
		ws[i].w_objs = objs;   /* worker i only touches objects i mod C */
		ws[i].w_rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ (uint64_t)t0;
		if (ws[i].w_rng == 0)
			ws[i].w_rng = 1;
		client_init(&ws[i].w_cl, ep);
		pthread_create(&ws[i].w_thread, NULL, load_worker, &ws[i]);
	}
	for (i = 0; i < cfg.lc_conc; i++) {
		int op;

		pthread_join(ws[i].w_thread, NULL);
		for (op = 0; op < OP_NR; op++) {
			ops[op] += ws[i].w_ops[op];
			errs[op] += ws[i].w_errors[op];
			total += ws[i].w_ops[op];
			terr += ws[i].w_errors[op];
		}
		reconnects += ws[i].w_cl.cl_reconnects;
		retries += ws[i].w_retries;
		vfail += ws[i].w_verify_failures;
		tfail += ws[i].w_transport_failures;
		lat_sum += ws[i].w_lat_sum;
		if (ws[i].w_lat_max > lat_max)
			lat_max = ws[i].w_lat_max;
		if (ws[i].w_last_error[0] != 0)
			last_error = ws[i].w_last_error;
	}
	elapsed = (double)(m0_time_now() - t0) / 1e9;
	printf("{\"duration_s\":%.3f,\"rate\":%g,\"concurrency\":%d,\"objects\":%d,"
	       "\"size\":%zu,\"prefix\":\"%s\",\"ops\":{", elapsed, cfg.lc_rate,
	       cfg.lc_conc, cfg.lc_objects, cfg.lc_size, cfg.lc_prefix);
	for (i = 0; i < OP_NR; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", op_names[i], ops[i]);
	printf("},\"errors\":{");
	for (i = 0; i < OP_NR; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", op_names[i], errs[i]);
	printf("},\"total_ops\":%" PRIu64 ",\"total_errors\":%" PRIu64
	       ",\"achieved_rate\":%.1f,\"reconnects\":%" PRIu64 ",\"retries\":%" PRIu64
	       ",\"transport_failures\":%" PRIu64 ",\"verify_failures\":%" PRIu64
	       ",\"latency_us\":{\"avg\":%.1f,\"max\":%.1f},\"last_error\":",
	       total, terr, elapsed > 0 ? (double)total / elapsed : 0.0, reconnects,
	       retries, tfail, vfail, total ? (double)lat_sum / (double)total / 1e3 : 0.0,
	       (double)lat_max / 1e3);
	{
		char esc[600];
		struct m0sim_sbuf sb;

		m0sim_sb_init(&sb, esc, sizeof esc);
		m0sim_sb_json_str(&sb, last_error, strlen(last_error));
		printf("%s}\n", esc);
	}
	fflush(stdout);
	free(objs);
	free(ws);
	return terr == 0 ? 0 : EXIT_SERVER;
}

int main(int argc, char **argv)
{
	const char *ep = NULL;
	struct client cl;
	int i = 1, rc;

	signal(SIGPIPE, SIG_IGN);
	while (i < argc && strncmp(argv[i], "--", 2) == 0) {
		if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc) {
			ep = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			opt_timeout_s = atoi(argv[i + 1]);
			i += 2;
		} else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[i], "fid") == 0) {
		rc = cmd_fid(argc - i, argv + i);
	} else if (ep == NULL) {
		fprintf(stderr, "m0client: --endpoint is required\n");
		return EXIT_USAGE;
	} else if (strcmp(argv[i], "load") == 0) {
		rc = cmd_load(ep, argc - i, argv + i);
	} else {
		client_init(&cl, ep);
		rc = cmd_single(&cl, argc - i, argv + i);
		client_close(&cl);
	}
	if (rc == EXIT_USAGE)
		usage(stderr);
	return rc;
}
