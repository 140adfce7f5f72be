/* rpc.c - server side of the rpc layer: the listener, one reader thread per
 * connection, connection and session establishment, item arrival and
 * replies. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_RPC
#include "reqh.h"
#include "m0sim_ctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------- connections */

static void conn_get(struct m0_rpc_conn *conn)
{
	__atomic_add_fetch(&conn->c_ref.ref_cnt, 1, __ATOMIC_RELAXED);
}

/** Drops a connection reference; the last one closes and frees it. */
void m0sim_rpc_conn_put(struct m0_rpc_conn *conn)
{
	struct m0_rpc_machine *m;

	if (conn == NULL ||
	    __atomic_sub_fetch(&conn->c_ref.ref_cnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	m = conn->c_rpc_machine;
	close(conn->c_fd);
	pthread_mutex_destroy(&conn->c_send_lock);
	m0_free(conn->c_session);
	m0_free(conn);
	pthread_mutex_lock(&m->rm_lock);
	m->rm_nr_conns--;
	pthread_cond_broadcast(&m->rm_cond);
	pthread_mutex_unlock(&m->rm_lock);
}

/** Server: sets up the connection of an accepted socket (conn->c_fd) from
 * the client at ep, and registers it with the machine. */
M0_PROBE int m0_rpc_conn_create(struct m0_rpc_conn *conn, struct m0_fid *svc_fid,
				struct m0_net_end_point *ep,
				struct m0_rpc_machine *m,
				uint64_t max_rpcs_in_flight, m0_time_t abs_timeout)
{
	(void)abs_timeout;
	conn->c_rpc_machine = m;
	conn->c_max_rpcs_in_flight = max_rpcs_in_flight;
	if (svc_fid != NULL)
		conn->c_svc_fid = *svc_fid;
	conn->c_ep = *ep;
	conn->c_ep.nep_addr = conn->c_ep.nep_addr_buf;
	conn->c_chan = (struct m0_rpc_chan){ &conn->c_ep, m };
	conn->c_rpcchan = &conn->c_chan;
	conn->c_state = M0_RPC_CONN_INITIALISED;
	conn->c_ref.ref_cnt = 1;   /* the reader thread's */
	conn->c_created = m0_time_now();
	m0_tl_init(&conn->c_sessions);
	pthread_mutex_init(&conn->c_send_lock, NULL);
	pthread_mutex_lock(&m->rm_lock);
	m0_tl_add_tail(&m->rm_incoming_conns, &conn->c_linkage);
	m->rm_nr_conns++;
	pthread_mutex_unlock(&m->rm_lock);
	M0_LOG(M0_INFO, "conn %p from %s created", conn, conn->c_ep.nep_addr);
	return 0;
}

/** Server: a CONN_ESTABLISH item arrived; assigns the sender id. */
M0_PROBE int m0_rpc_conn_establish(struct m0_rpc_conn *conn, m0_time_t abs_timeout)
{
	struct m0_rpc_machine *m = conn->c_rpc_machine;

	(void)abs_timeout;
	pthread_mutex_lock(&m->rm_lock);
	conn->c_sender_id = ++m->rm_next_sender_id;
	pthread_mutex_unlock(&m->rm_lock);
	pthread_mutex_lock(&conn->c_send_lock);
	conn->c_state = M0_RPC_CONN_ACTIVE;
	pthread_mutex_unlock(&conn->c_send_lock);
	M0_LOG(M0_NOTICE, "conn %p from %s established: sender id %" PRIu64,
	       conn, conn->c_ep.nep_addr, conn->c_sender_id);
	return 0;
}

/** Server: tears a connection down (client request, disconnect, reset). */
M0_PROBE int m0_rpc_conn_terminate(struct m0_rpc_conn *conn, m0_time_t abs_timeout)
{
	struct m0_rpc_machine *m = conn->c_rpc_machine;
	bool linked;

	(void)abs_timeout;
	pthread_mutex_lock(&m->rm_lock);
	linked = conn->c_linkage.t_link.ll_next != NULL;
	if (linked)
		m0_tl_del(&m->rm_incoming_conns, &conn->c_linkage);
	pthread_mutex_unlock(&m->rm_lock);
	pthread_mutex_lock(&conn->c_send_lock);
	conn->c_state = M0_RPC_CONN_TERMINATED;
	pthread_mutex_unlock(&conn->c_send_lock);
	shutdown(conn->c_fd, SHUT_RDWR);
	if (linked)
		M0_LOG(M0_NOTICE, "conn %p sender id %" PRIu64 " from %s terminated",
		       conn, conn->c_sender_id, conn->c_ep.nep_addr);
	return 0;
}

/** Server: a SESSION_ESTABLISH item arrived; assigns the session id. */
M0_PROBE int m0_rpc_session_establish(struct m0_rpc_session *session,
				      m0_time_t abs_timeout)
{
	struct m0_rpc_conn *conn = session->s_conn;
	struct m0_rpc_machine *m = conn->c_rpc_machine;

	(void)abs_timeout;
	pthread_mutex_lock(&m->rm_lock);
	session->s_session_id = ++m->rm_next_session_id;
	session->s_state = M0_RPC_SESSION_IDLE;
	conn->c_nr_sessions++;
	conn->c_session = session;
	m0_tl_add_tail(&conn->c_sessions, &session->s_link);
	pthread_mutex_unlock(&m->rm_lock);
	M0_LOG(M0_NOTICE, "session %" PRIu64 " established on conn %p sender id %"
	       PRIu64 " (%s)", session->s_session_id, conn, conn->c_sender_id,
	       conn->c_ep.nep_addr);
	return 0;
}

M0_PROBE int m0_rpc_session_terminate(struct m0_rpc_session *session,
				      m0_time_t abs_timeout)
{
	struct m0_rpc_conn *conn = session->s_conn;
	struct m0_rpc_machine *m = conn->c_rpc_machine;

	(void)abs_timeout;
	pthread_mutex_lock(&m->rm_lock);
	if (session->s_state != M0_RPC_SESSION_TERMINATED) {
		session->s_state = M0_RPC_SESSION_TERMINATED;
		conn->c_nr_sessions--;
	}
	pthread_mutex_unlock(&m->rm_lock);
	M0_LOG(M0_NOTICE, "session %" PRIu64 " terminated", session->s_session_id);
	return 0;
}

/** Sends an item (a reply, on the server) on its connection.  Items for a
 * terminated connection are dropped with -ENOTCONN. */
M0_PROBE int m0_rpc_post(struct m0_rpc_item *item)
{
	struct m0_rpc_conn *conn = item->ri_conn;
	struct m0sim_wire_msg msg;
	int rc;

	if (conn == NULL)
		return -ENOTCONN;
	m0sim_wire_from_item(&msg, m0_rpc_item_to_fop(item), true);
	item->ri_size = M0SIM_WIRE_HDR + 8 + msg.wm_name.b_nob + msg.wm_data.b_nob;
	pthread_mutex_lock(&conn->c_send_lock);
	if (conn->c_state == M0_RPC_CONN_TERMINATED)
		rc = -ENOTCONN;
	else
		rc = m0sim_wire_send(conn->c_fd, &msg);
	pthread_mutex_unlock(&conn->c_send_lock);
	if (rc == 0)
		__atomic_add_fetch(&item->ri_rmachine->rm_items_sent, 1,
				   __ATOMIC_RELAXED);
	M0_LOG(M0_DEBUG, "post opcode %u xid %" PRIu64 " rc %d: %d",
	       item->ri_type->rit_opcode, item->ri_header.osr_xid, item->ri_error, rc);
	return rc;
}

int m0sim_rpc_reply(struct m0_fop *req, int rc, const void *data, size_t len)
{
	struct m0_fop *rep = m0_fop_alloc(req->f_type);
	int prc;

	if (rep == NULL)
		return -ENOMEM;
	rep->f_item.ri_header = req->f_item.ri_header;
	rep->f_item.ri_session = req->f_item.ri_session;
	rep->f_item.ri_rmachine = req->f_item.ri_rmachine;
	rep->f_item.ri_conn = req->f_item.ri_conn;
	rep->f_item.ri_error = rc;
	if (data != NULL && len > 0 && m0sim_fop_data_set(rep, data, len) != 0) {
		m0_fop_put(rep);
		return -ENOMEM;
	}
	prc = m0_rpc_post(&rep->f_item);
	m0_fop_put(rep);
	return prc;
}

/** Forwards a request item to the request handler. */
M0_PROBE int m0_rpc_item_dispatch(struct m0_rpc_item *item)
{
	return m0_reqh_fop_handle(item->ri_rmachine->rm_reqh,
				  m0_rpc_item_to_fop(item));
}

static void reply_text(struct m0_fop *fop, int rc, const char *text)
{
	m0sim_rpc_reply(fop, rc, text, strlen(text));
}

/** Every item arriving at the server comes through here: connection and
 * session items are handled by the rpc layer, admin commands directly,
 * the rest goes to the request handler. */
M0_PROBE void m0_rpc_item_received(struct m0_rpc_item *item,
				   struct m0_rpc_machine *machine)
{
	struct m0_fop *fop = m0_rpc_item_to_fop(item);
	struct m0_rpc_conn *conn = item->ri_conn;
	struct m0_rpc_item_header2 *h = &item->ri_header;
	struct m0_rpc_session *session;
	uint32_t opcode = item->ri_type->rit_opcode;
	uint64_t v[3] = { opcode, h->osr_xid, item->ri_size };

	__atomic_add_fetch(&machine->rm_items_received, 1, __ATOMIC_RELAXED);
	m0_addb2_add(M0_AVI_RPC_ITEM, 3, v);
	M0_LOG(M0_DEBUG, "item opcode %u xid %" PRIu64 " sender %" PRIu64
	       " session %" PRIu64, opcode, h->osr_xid, h->osr_sender_id,
	       h->osr_session_id);

	if (opcode == M0_RPC_CONN_ESTABLISH_OPCODE) {
		if (conn->c_sender_id != 0) {
			reply_text(fop, -EALREADY, "connection already established");
			return;
		}
		m0_rpc_conn_establish(conn, 0);
		h->osr_sender_id = conn->c_sender_id;
		m0sim_rpc_reply(fop, 0, NULL, 0);
		return;
	}
	if (conn->c_sender_id == 0 || h->osr_sender_id != conn->c_sender_id) {
		reply_text(fop, -ENOTCONN, "connection not established (bad sender id)");
		return;
	}
	switch (opcode) {
	case M0_RPC_SESSION_ESTABLISH_OPCODE:
		if (conn->c_session != NULL) {
			reply_text(fop, -EALREADY, "one session per connection");
			return;
		}
		session = m0_alloc(sizeof *session);
		if (session == NULL) {
			reply_text(fop, -ENOMEM, "out of memory");
			return;
		}
		session->s_conn = conn;
		session->s_state = M0_RPC_SESSION_ESTABLISHING;
		m0_rpc_session_establish(session, 0);
		h->osr_session_id = session->s_session_id;
		m0sim_rpc_reply(fop, 0, NULL, 0);
		return;
	case M0_RPC_CONN_TERMINATE_OPCODE:
		m0sim_rpc_reply(fop, 0, NULL, 0);
		m0_rpc_conn_terminate(conn, 0);
		return;
	case M0SIM_ADMIN_OPCODE: {
		const struct m0_buf *cmd = &fop->f_body.fb_data;
		char *line = m0_alloc(cmd->b_nob + 1);
		char *out = m0_alloc(M0SIM_ADMIN_OUT_MAX);
		int rc;

		if (line == NULL || out == NULL) {
			m0_free(line);
			m0_free(out);
			reply_text(fop, -ENOMEM, "out of memory");
			return;
		}
		memcpy(line, cmd->b_addr, cmd->b_nob);
		rc = m0sim_admin(line, out, M0SIM_ADMIN_OUT_MAX);
		reply_text(fop, rc, out);
		m0sim_reqh_count(machine->rm_reqh, fop->f_type, rc);
		m0_free(line);
		m0_free(out);
		return;
	}
	default:
		break;
	}
	session = conn->c_session;
	if (session == NULL || session->s_state == M0_RPC_SESSION_TERMINATED ||
	    h->osr_session_id != session->s_session_id) {
		reply_text(fop, -ENOTCONN, "no such session");
		return;
	}
	pthread_mutex_lock(&machine->rm_lock);
	session->s_xid = h->osr_xid;
	pthread_mutex_unlock(&machine->rm_lock);
	item->ri_session = session;
	if (opcode == M0_RPC_SESSION_TERMINATE_OPCODE) {
		m0_rpc_session_terminate(session, 0);
		m0sim_rpc_reply(fop, 0, NULL, 0);
		return;
	}
	m0_rpc_item_dispatch(item);
}

/* --------------------------------------------------------------- threads */

/* Reads frames from one connection until it closes. */
static void *conn_reader(void *arg)
{
	struct m0_rpc_conn *conn = arg;
	struct m0_rpc_machine *m = conn->c_rpc_machine;

	for (;;) {
		struct m0sim_wire_msg msg;
		struct m0_fop_type *ft;
		struct m0_fop *fop;
		void *frame;
		size_t fsize;
		int rc;

		rc = m0sim_wire_recv(conn->c_fd, &msg, &frame, &fsize);
		if (rc != 0) {
			if (rc != -ECONNRESET)
				M0_LOG(M0_WARN, "conn %p: receive: %d", conn, rc);
			break;
		}
		ft = m0sim_fop_type_find(msg.wm_opcode);
		if (ft == NULL || (msg.wm_flags & M0SIM_WIRE_REPLY)) {
			static const char text[] = "unknown opcode";
			struct m0sim_wire_msg r = msg;

			r.wm_flags = M0SIM_WIRE_REPLY;
			r.wm_rc = -EOPNOTSUPP;
			r.wm_name = (struct m0_buf){ 0, NULL };
			r.wm_data = (struct m0_buf){ sizeof text - 1, (void *)text };
			pthread_mutex_lock(&conn->c_send_lock);
			m0sim_wire_send(conn->c_fd, &r);
			pthread_mutex_unlock(&conn->c_send_lock);
			m0_free(frame);
			continue;
		}
		fop = m0_fop_alloc(ft);
		if (fop == NULL) {
			m0_free(frame);
			break;
		}
		fop->f_wire = frame;
		fop->f_body.fb_name = msg.wm_name;
		fop->f_body.fb_data = msg.wm_data;
		fop->f_item.ri_header.osr_sender_id = msg.wm_sender_id;
		fop->f_item.ri_header.osr_session_id = msg.wm_session_id;
		fop->f_item.ri_header.osr_xid = msg.wm_xid;
		fop->f_item.ri_header.osr_uuid = conn->c_uuid;
		fop->f_item.ri_rmachine = m;
		fop->f_item.ri_rpc_time = m0_time_now();
		fop->f_item.ri_size = fsize + 4;
		fop->f_item.ri_conn = conn;
		conn_get(conn);
		fop->f_conn_ref = true;
		m0_rpc_item_received(&fop->f_item, m);
		m0_fop_put(fop);   /* the reader's reference */
		if (conn->c_state == M0_RPC_CONN_TERMINATED)
			break;
	}
	if (conn->c_session != NULL)
		m0_rpc_session_terminate(conn->c_session, 0);
	m0_rpc_conn_terminate(conn, 0);
	m0sim_rpc_conn_put(conn);
	pthread_mutex_lock(&m->rm_lock);
	m->rm_nr_readers--;
	pthread_cond_broadcast(&m->rm_cond);
	pthread_mutex_unlock(&m->rm_lock);
	return NULL;
}

static void *listener(void *arg)
{
	struct m0_rpc_machine *m = arg;

	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof peer;
		struct m0_net_end_point ep;
		struct m0_rpc_conn *conn;
		pthread_attr_t attr;
		pthread_t t;
		char ip[INET_ADDRSTRLEN];
		int fd, one = 1;

		fd = accept4(m->rm_listen_fd, (struct sockaddr *)&peer, &plen,
			     SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;   /* shut down */
		}
		if (__atomic_load_n(&m->rm_stopping, __ATOMIC_ACQUIRE)) {
			close(fd);
			break;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
		m0sim_ep_set(&ep, ip, ntohs(peer.sin_port));
		conn = m0_alloc(sizeof *conn);
		if (conn == NULL) {
			close(fd);
			continue;
		}
		conn->c_fd = fd;
		m0_rpc_conn_create(conn, NULL, &ep, m, 64, 0);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_mutex_lock(&m->rm_lock);
		m->rm_nr_readers++;
		pthread_mutex_unlock(&m->rm_lock);
		if (pthread_create(&t, &attr, conn_reader, conn) != 0) {
			m0_rpc_conn_terminate(conn, 0);
			m0sim_rpc_conn_put(conn);
			pthread_mutex_lock(&m->rm_lock);
			m->rm_nr_readers--;
			pthread_mutex_unlock(&m->rm_lock);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int m0sim_rpc_start(struct m0_rpc_machine *m, struct m0_reqh *reqh,
		    unsigned port, char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t slen = sizeof sa;
	int one = 1;

	memset(m, 0, sizeof *m);
	pthread_mutex_init(&m->rm_lock, NULL);
	pthread_cond_init(&m->rm_cond, NULL);
	m0_tl_init(&m->rm_incoming_conns);
	m0_tl_init(&m->rm_outgoing_conns);
	m->rm_reqh = reqh;
	m->rm_next_session_id = 1000;
	m->rm_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (m->rm_listen_fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	setsockopt(m->rm_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (bind(m->rm_listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(m->rm_listen_fd, 128) != 0 ||
	    getsockname(m->rm_listen_fd, (struct sockaddr *)&sa, &slen) != 0) {
		snprintf(err, errlen, "127.0.0.1:%u: %s", port, strerror(errno));
		close(m->rm_listen_fd);
		return -errno;
	}
	m0sim_ep_set(&m->rm_ep, "127.0.0.1", ntohs(sa.sin_port));
	if (pthread_create(&m->rm_listener, NULL, listener, m) != 0) {
		snprintf(err, errlen, "cannot start the listener");
		close(m->rm_listen_fd);
		return -EAGAIN;
	}
	return 0;
}

void m0sim_rpc_stop(struct m0_rpc_machine *m)
{
	struct m0_tlink *l;

	__atomic_store_n(&m->rm_stopping, true, __ATOMIC_RELEASE);
	shutdown(m->rm_listen_fd, SHUT_RDWR);   /* wakes accept() */
	pthread_join(m->rm_listener, NULL);
	close(m->rm_listen_fd);
	m->rm_listen_fd = -1;
	/* Wake every reader; each terminates its session and connection. */
	pthread_mutex_lock(&m->rm_lock);
	for (l = m0_tl_head(&m->rm_incoming_conns); l != NULL;
	     l = m0_tl_next(&m->rm_incoming_conns, l))
		shutdown(container_of(l, struct m0_rpc_conn, c_linkage)->c_fd,
			 SHUT_RDWR);
	/* No item reaches the request handler after this. */
	while (m->rm_nr_readers > 0)
		pthread_cond_wait(&m->rm_cond, &m->rm_lock);
	pthread_mutex_unlock(&m->rm_lock);
}

void m0sim_rpc_wait_idle(struct m0_rpc_machine *m)
{
	pthread_mutex_lock(&m->rm_lock);
	while (m->rm_nr_conns > 0)
		pthread_cond_wait(&m->rm_cond, &m->rm_lock);
	pthread_mutex_unlock(&m->rm_lock);
}

void m0sim_rpc_fini(struct m0_rpc_machine *m)
{
	m0sim_rpc_wait_idle(m);
	pthread_cond_destroy(&m->rm_cond);
	pthread_mutex_destroy(&m->rm_lock);
}

int m0sim_rpc_session_reset(struct m0_rpc_machine *m, uint64_t session_id)
{
	struct m0_tlink *l;
	int rc = -ENOENT;

	pthread_mutex_lock(&m->rm_lock);
	for (l = m0_tl_head(&m->rm_incoming_conns); l != NULL;
	     l = m0_tl_next(&m->rm_incoming_conns, l)) {
		struct m0_rpc_conn *c = container_of(l, struct m0_rpc_conn, c_linkage);

		if (c->c_session != NULL && c->c_session->s_session_id == session_id &&
		    c->c_session->s_state != M0_RPC_SESSION_TERMINATED) {
			/* The reader sees end of file and tears down. */
			shutdown(c->c_fd, SHUT_RDWR);
			M0_LOG(M0_NOTICE, "session %" PRIu64 " (%s) reset", session_id,
			       c->c_ep.nep_addr);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->rm_lock);
	return rc;
}

void m0sim_rpc_stats_json(struct m0_rpc_machine *m, struct m0sim_sbuf *sb)
{
	struct m0_tlink *l;
	uint64_t conns = 0, open = 0;
	bool first = true;

	pthread_mutex_lock(&m->rm_lock);
	m0sim_sb_printf(sb, "\"endpoint\":\"%s\",\"sessions\":[", m->rm_ep.nep_addr);
	for (l = m0_tl_head(&m->rm_incoming_conns); l != NULL;
	     l = m0_tl_next(&m->rm_incoming_conns, l)) {
		struct m0_rpc_conn *c = container_of(l, struct m0_rpc_conn, c_linkage);
		struct m0_rpc_session *s = c->c_session;

		conns++;
		if (s == NULL || s->s_state == M0_RPC_SESSION_TERMINATED)
			continue;
		open++;
		m0sim_sb_printf(sb, "%s{\"session_id\":%" PRIu64 ",\"sender_id\":%"
				PRIu64 ",\"endpoint\":\"%s\",\"xid\":%" PRIu64 "}",
				first ? "" : ",", s->s_session_id, c->c_sender_id,
				c->c_ep.nep_addr, s->s_xid);
		first = false;
	}
	m0sim_sb_printf(sb, "],\"sessions_open\":%" PRIu64 ",\"connections\":%"
			PRIu64 ",\"items_received\":%" PRIu64 ",\"items_sent\":%" PRIu64,
			open, conns,
			__atomic_load_n(&m->rm_items_received, __ATOMIC_RELAXED),
			__atomic_load_n(&m->rm_items_sent, __ATOMIC_RELAXED));
	pthread_mutex_unlock(&m->rm_lock);
}
