/* rpc.h - RPC items, connections, sessions, fops and the wire protocol.
 *
 * The same structures and m0_rpc_* prototypes serve both sides: rpc.c
 * implements them for the server (m0d), m0client.c for the client. */
#ifndef M0SIM_RPC_H
#define M0SIM_RPC_H

#include "m0sim.h"

#include <pthread.h>

/* Opcodes: Motr's rpc/rpc_opcodes.h numbers where Motr has the operation,
 * a private range (900+) for m0sim's own. */
enum M0_RPC_OPCODES {
	M0_RPC_CONN_ESTABLISH_OPCODE = 10,
	M0_RPC_SESSION_ESTABLISH_OPCODE = 13,
	M0_RPC_SESSION_TERMINATE_OPCODE = 14,
	M0_RPC_CONN_TERMINATE_OPCODE = 16,
	M0_IOSERVICE_READV_OPCODE = 41,
	M0_IOSERVICE_WRITEV_OPCODE = 42,
	M0_IOSERVICE_GETATTR_OPCODE = 45,
	M0_IOSERVICE_COB_CREATE_OPCODE = 49,
	M0_IOSERVICE_COB_DELETE_OPCODE = 50,
	M0SIM_STATS_OPCODE = 901,
	M0SIM_OBJINFO_OPCODE = 902,
	M0SIM_ADMIN_OPCODE = 903,
};

/* -------------------------------------------------------------- network */

/** Remote end point; nep_addr is like "inet:tcp:127.0.0.1@3000". */
struct m0_net_end_point {
	const char *nep_addr;
	char nep_addr_buf[64];   /* m0sim: storage for nep_addr */
};

/** Channel to a remote end point. */
struct m0_rpc_chan {
	struct m0_net_end_point *rc_destep;
	struct m0_rpc_machine *rc_rpc_machine;
};

/* ------------------------------------------------------------ rpc items */

struct m0_rpc_item_type {
	uint32_t rit_opcode;
	uint64_t rit_flags;
};

struct m0_cookie {
	uint64_t co_addr;
	uint64_t co_generation;
};

/** Header every item carries on the wire. */
struct m0_rpc_item_header2 {
	struct m0_uint128 osr_uuid;
	uint64_t osr_sender_id;
	uint64_t osr_session_id;
	uint64_t osr_xid;
	struct m0_cookie osr_cookie;
};

struct m0_rpc_item {
	const struct m0_rpc_item_type *ri_type;
	struct m0_rpc_item_header2 ri_header;
	struct m0_rpc_session *ri_session;
	struct m0_rpc_machine *ri_rmachine;
	int32_t ri_error;          /* replies: 0 or -errno */
	m0_time_t ri_rpc_time;     /* arrival (server) or send (client) time */
	m0_bcount_t ri_size;       /* bytes on the wire */
	struct m0_rpc_conn *ri_conn; /* m0sim: connection of the item */
};

enum m0_rpc_session_state {
	M0_RPC_SESSION_INITIALISED = 1,
	M0_RPC_SESSION_ESTABLISHING,
	M0_RPC_SESSION_IDLE,
	M0_RPC_SESSION_BUSY,
	M0_RPC_SESSION_TERMINATING,
	M0_RPC_SESSION_TERMINATED,
	M0_RPC_SESSION_FAILED,
};

struct m0_rpc_session {
	uint64_t s_session_id;
	struct m0_rpc_conn *s_conn;
	uint64_t s_xid;            /* last xid sent (client) or received (server) */
	enum m0_rpc_session_state s_state;
	struct m0_tlink s_link;    /* in its connection's c_sessions (server) */
};

enum m0_rpc_conn_state {
	M0_RPC_CONN_INITIALISED = 1,
	M0_RPC_CONN_CONNECTING,
	M0_RPC_CONN_ACTIVE,
	M0_RPC_CONN_TERMINATING,
	M0_RPC_CONN_TERMINATED,
	M0_RPC_CONN_FAILED,
};

/** One TCP connection.  In m0sim a connection carries at most one session. */
struct m0_rpc_conn {
	uint64_t c_sender_id;
	struct m0_uint128 c_uuid;
	struct m0_rpc_machine *c_rpc_machine;
	uint64_t c_nr_sessions;
	struct m0_rpc_chan *c_rpcchan;
	struct m0_fid c_svc_fid;
	uint64_t c_max_rpcs_in_flight;
	enum m0_rpc_conn_state c_state;   /* under c_send_lock */
	/* m0sim private */
	int c_fd;
	pthread_mutex_t c_send_lock;
	struct m0_ref c_ref;
	struct m0_tlink c_linkage;        /* in rm_incoming_conns */
	struct m0_tl c_sessions;          /* its sessions (s_link), as Motr's */
	struct m0_rpc_session *c_session;
	struct m0_rpc_chan c_chan;
	struct m0_net_end_point c_ep;
	m0_time_t c_created;
};

/** One process's RPC end. */
struct m0_rpc_machine {
	pthread_mutex_t rm_lock;
	pthread_cond_t rm_cond;          /* a connection went away */
	struct m0_tl rm_incoming_conns;  /* connections from clients */
	struct m0_tl rm_outgoing_conns;
	uint64_t rm_nr_conns;            /* allocated connections */
	uint64_t rm_nr_readers;          /* server connection reader threads */
	struct m0_net_end_point rm_ep;   /* own end point */
	struct m0_reqh *rm_reqh;
	uint64_t rm_next_sender_id;
	uint64_t rm_next_session_id;
	uint64_t rm_items_received;
	uint64_t rm_items_sent;
	int rm_listen_fd;
	bool rm_stopping;
	pthread_t rm_listener;
};

/* ----------------------------------------------------------------- fops */

struct m0_fom_ops;
struct m0_reqh_service_type;

struct m0_fom_type {
	uint64_t ft_id;
	const struct m0_fom_ops *ft_ops;
	const struct m0_reqh_service_type *ft_rstype;
};

/** m0sim service indices: which reqh service handles a fop type. */
enum m0sim_service_idx {
	M0SIM_SVC_NONE = -1,   /* handled by the rpc layer itself */
	M0SIM_SVC_IOS = 0,     /* "ioservice": read, write */
	M0SIM_SVC_MDS,         /* "mdservice": create, delete, getattr, objinfo */
	M0SIM_SVC_SSS,         /* "sss": stats */
	M0SIM_SVC_NR,
};

struct m0_fop_type {
	const char *ft_name;
	struct m0_fom_type ft_fom_type;
	struct m0_rpc_item_type ft_rpc_item_type;
	/* m0sim */
	int ft_idx;                       /* index in m0sim_fop_types[] */
	enum m0sim_service_idx ft_service;
	bool ft_has_name;                 /* requests carry an object name */
};

extern struct m0_fop_type m0_rpc_fop_conn_establish_fopt;
extern struct m0_fop_type m0_rpc_fop_session_establish_fopt;
extern struct m0_fop_type m0_rpc_fop_session_terminate_fopt;
extern struct m0_fop_type m0_rpc_fop_conn_terminate_fopt;
extern struct m0_fop_type m0_fop_cob_create_fopt;
extern struct m0_fop_type m0_fop_cob_delete_fopt;
extern struct m0_fop_type m0_fop_cob_writev_fopt;
extern struct m0_fop_type m0_fop_cob_readv_fopt;
extern struct m0_fop_type m0_fop_cob_getattr_fopt;
extern struct m0_fop_type m0sim_fop_stats_fopt;
extern struct m0_fop_type m0sim_fop_objinfo_fopt;
extern struct m0_fop_type m0sim_fop_admin_fopt;

enum { M0SIM_FOPT_NR = 12 };
extern struct m0_fop_type *const m0sim_fop_types[M0SIM_FOPT_NR];
struct m0_fop_type *m0sim_fop_type_find(uint32_t opcode);

/** Decoded fop payload: every fop carries an object name and a data
 * buffer (either may be empty). */
struct m0sim_fop_body {
	struct m0_buf fb_name;
	struct m0_buf fb_data;
	bool fb_data_owned;     /* fb_data.b_addr was m0_alloc()ed for the fop */
};

struct m0_fop_data {
	void *fd_data;          /* -> struct m0sim_fop_body */
};

struct m0_fop {
	struct m0_ref f_ref;
	struct m0_fop_type *f_type;
	struct m0_fop_data f_data;
	struct m0_rpc_item f_item;
	void *f_opaque;
	/* m0sim private */
	struct m0sim_fop_body f_body;
	void *f_wire;           /* received frame the body points into */
	bool f_conn_ref;        /* holds a reference on f_item.ri_conn */
};

struct m0_fop *m0_fop_alloc(struct m0_fop_type *fopt);
void m0_fop_get(struct m0_fop *fop);
void m0_fop_put(struct m0_fop *fop);
struct m0_fop *m0_rpc_item_to_fop(const struct m0_rpc_item *item);
/** Sets the fop's data to a copy of len bytes (owned by the fop). */
int m0sim_fop_data_set(struct m0_fop *fop, const void *data, size_t len);

/* --------------------------------------------------------------- wire */

/* Frame layout (little-endian):
 *   u32 length of the rest of the frame
 *   u32 magic "M0SM" (0x4d53304d)
 *   u16 opcode, u16 flags (bit 0: reply), i32 rc (replies: 0 or -errno)
 *   u64 sender_id, u64 session_id, u64 xid
 *   u32 nr_fields (2), then per field: u32 length, bytes
 * Field 0 is the object name, field 1 the data (write payload, read data,
 * JSON text, admin command or error message). */
enum {
	M0SIM_WIRE_MAGIC = 0x4d53304d,
	M0SIM_WIRE_HDR = 44,
	M0SIM_WIRE_MAX = 4 << 20,
	M0SIM_WIRE_REPLY = 1,
};

struct m0sim_wire_msg {
	uint16_t wm_opcode;
	uint16_t wm_flags;
	int32_t wm_rc;
	uint64_t wm_sender_id;
	uint64_t wm_session_id;
	uint64_t wm_xid;
	struct m0_buf wm_name;
	struct m0_buf wm_data;
};

/** Sends one frame; 0 or -errno. */
int m0sim_wire_send(int fd, const struct m0sim_wire_msg *msg);
/** Receives one frame into an m0_alloc()ed buffer (*frame, *frame_size);
 * wm_name/wm_data point into it.  0, -ECONNRESET at EOF, or -errno. */
int m0sim_wire_recv(int fd, struct m0sim_wire_msg *msg, void **frame,
		    size_t *frame_size);
void m0sim_wire_from_item(struct m0sim_wire_msg *msg, const struct m0_fop *fop,
			  bool reply);

/* ----------------------------------------------------------- rpc calls */

int m0_rpc_conn_create(struct m0_rpc_conn *conn, struct m0_fid *svc_fid,
		       struct m0_net_end_point *ep, struct m0_rpc_machine *m,
		       uint64_t max_rpcs_in_flight, m0_time_t abs_timeout);
int m0_rpc_conn_establish(struct m0_rpc_conn *conn, m0_time_t abs_timeout);
int m0_rpc_conn_terminate(struct m0_rpc_conn *conn, m0_time_t abs_timeout);
int m0_rpc_session_establish(struct m0_rpc_session *session,
			     m0_time_t abs_timeout);
int m0_rpc_session_terminate(struct m0_rpc_session *session,
			     m0_time_t abs_timeout);
int m0_rpc_post(struct m0_rpc_item *item);
void m0_rpc_item_received(struct m0_rpc_item *item,
			  struct m0_rpc_machine *machine);
int m0_rpc_item_dispatch(struct m0_rpc_item *item);

/** Drops a reference on a connection (frees it at zero). */
void m0sim_rpc_conn_put(struct m0_rpc_conn *conn);

/** Formats an end point "inet:tcp:127.0.0.1@PORT". */
void m0sim_ep_set(struct m0_net_end_point *ep, const char *ip, unsigned port);
/** Parses "inet:tcp:IP@PORT" or "IP:PORT"; 0 or -EINVAL. */
int m0sim_ep_parse(const char *s, char *ip, size_t iplen, unsigned *port);

#endif /* M0SIM_RPC_H */
