/* wire.c - fop types, fop life cycle and frame encoding (both sides). */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_RPC
#include "rpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ----------------------------------------------------------- fop types */

#define FOPT(var, name, opcode, idx, svc, has_name)                       \
	struct m0_fop_type var = {                                         \
		.ft_name = name,                                           \
		.ft_fom_type = { .ft_id = opcode },                        \
		.ft_rpc_item_type = { .rit_opcode = opcode },              \
		.ft_idx = idx,                                             \
		.ft_service = svc,                                         \
		.ft_has_name = has_name,                                   \
	}

FOPT(m0_rpc_fop_conn_establish_fopt, "conn-establish",
     M0_RPC_CONN_ESTABLISH_OPCODE, 0, M0SIM_SVC_NONE, false);
FOPT(m0_rpc_fop_session_establish_fopt, "session-establish",
     M0_RPC_SESSION_ESTABLISH_OPCODE, 1, M0SIM_SVC_NONE, false);
FOPT(m0_rpc_fop_session_terminate_fopt, "session-terminate",
     M0_RPC_SESSION_TERMINATE_OPCODE, 2, M0SIM_SVC_NONE, false);
FOPT(m0_rpc_fop_conn_terminate_fopt, "conn-terminate",
     M0_RPC_CONN_TERMINATE_OPCODE, 3, M0SIM_SVC_NONE, false);
FOPT(m0_fop_cob_create_fopt, "create",
     M0_IOSERVICE_COB_CREATE_OPCODE, 4, M0SIM_SVC_MDS, true);
FOPT(m0_fop_cob_writev_fopt, "write",
     M0_IOSERVICE_WRITEV_OPCODE, 5, M0SIM_SVC_IOS, true);
FOPT(m0_fop_cob_readv_fopt, "read",
     M0_IOSERVICE_READV_OPCODE, 6, M0SIM_SVC_IOS, true);
FOPT(m0_fop_cob_delete_fopt, "delete",
     M0_IOSERVICE_COB_DELETE_OPCODE, 7, M0SIM_SVC_MDS, true);
FOPT(m0_fop_cob_getattr_fopt, "getattr",
     M0_IOSERVICE_GETATTR_OPCODE, 8, M0SIM_SVC_MDS, true);
FOPT(m0sim_fop_stats_fopt, "stats",
     M0SIM_STATS_OPCODE, 9, M0SIM_SVC_SSS, false);
FOPT(m0sim_fop_objinfo_fopt, "objinfo",
     M0SIM_OBJINFO_OPCODE, 10, M0SIM_SVC_MDS, true);
FOPT(m0sim_fop_admin_fopt, "admin",
     M0SIM_ADMIN_OPCODE, 11, M0SIM_SVC_NONE, false);

struct m0_fop_type *const m0sim_fop_types[M0SIM_FOPT_NR] = {
	&m0_rpc_fop_conn_establish_fopt,
	&m0_rpc_fop_session_establish_fopt,
	&m0_rpc_fop_session_terminate_fopt,
	&m0_rpc_fop_conn_terminate_fopt,
	&m0_fop_cob_create_fopt,
	&m0_fop_cob_writev_fopt,
	&m0_fop_cob_readv_fopt,
	&m0_fop_cob_delete_fopt,
	&m0_fop_cob_getattr_fopt,
	&m0sim_fop_stats_fopt,
	&m0sim_fop_objinfo_fopt,
	&m0sim_fop_admin_fopt,
};

struct m0_fop_type *m0sim_fop_type_find(uint32_t opcode)
{
	size_t i;

	for (i = 0; i < M0SIM_FOPT_NR; i++) {
		if (m0sim_fop_types[i]->ft_rpc_item_type.rit_opcode == opcode)
			return m0sim_fop_types[i];
	}
	return NULL;
}

/* ----------------------------------------------------------------- fops */

struct m0_fop *m0_fop_alloc(struct m0_fop_type *fopt)
{
	struct m0_fop *fop = m0_alloc(sizeof *fop);

	if (fop == NULL)
		return NULL;
	fop->f_ref.ref_cnt = 1;
	fop->f_type = fopt;
	fop->f_data.fd_data = &fop->f_body;
	fop->f_item.ri_type = &fopt->ft_rpc_item_type;
	return fop;
}

void m0_fop_get(struct m0_fop *fop)
{
	__atomic_add_fetch(&fop->f_ref.ref_cnt, 1, __ATOMIC_RELAXED);
}

/** Drops a reference; the last one frees the fop, its frame and its owned
 * data, and releases the connection reference. */
void m0_fop_put(struct m0_fop *fop)
{
	if (fop == NULL)
		return;
	if (__atomic_sub_fetch(&fop->f_ref.ref_cnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (fop->f_body.fb_data_owned)
		m0_free(fop->f_body.fb_data.b_addr);
	m0_free(fop->f_wire);
	if (fop->f_conn_ref)
		m0sim_rpc_conn_put(fop->f_item.ri_conn);
	m0_free(fop);
}

struct m0_fop *m0_rpc_item_to_fop(const struct m0_rpc_item *item)
{
	return container_of(item, struct m0_fop, f_item);
}

int m0sim_fop_data_set(struct m0_fop *fop, const void *data, size_t len)
{
	void *copy = m0_alloc_nz(len ? len : 1);

	if (copy == NULL)
		return -ENOMEM;
	if (len > 0)
		memcpy(copy, data, len);
	if (fop->f_body.fb_data_owned)
		m0_free(fop->f_body.fb_data.b_addr);
	fop->f_body.fb_data.b_addr = copy;
	fop->f_body.fb_data.b_nob = len;
	fop->f_body.fb_data_owned = true;
	return 0;
}

/* ---------------------------------------------------------------- wire */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

int m0sim_wire_send(int fd, const struct m0sim_wire_msg *msg)
{
	uint8_t hdr[M0SIM_WIRE_HDR + 4];
	uint8_t dlen[4];
	struct iovec iov[4];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 4 };
	size_t total = M0SIM_WIRE_HDR + 4 + msg->wm_name.b_nob + 4 +
		msg->wm_data.b_nob;

	if (total - 4 > M0SIM_WIRE_MAX)
		return -EMSGSIZE;
	put32(hdr, (uint32_t)(total - 4));
	put32(hdr + 4, M0SIM_WIRE_MAGIC);
	put16(hdr + 8, msg->wm_opcode);
	put16(hdr + 10, msg->wm_flags);
	put32(hdr + 12, (uint32_t)msg->wm_rc);
	put64(hdr + 16, msg->wm_sender_id);
	put64(hdr + 24, msg->wm_session_id);
	put64(hdr + 32, msg->wm_xid);
	put32(hdr + 40, 2);
	put32(hdr + 44, (uint32_t)msg->wm_name.b_nob);
	put32(dlen, (uint32_t)msg->wm_data.b_nob);
	iov[0] = (struct iovec){ hdr, sizeof hdr };
	iov[1] = (struct iovec){ msg->wm_name.b_addr, msg->wm_name.b_nob };
	iov[2] = (struct iovec){ dlen, sizeof dlen };
	iov[3] = (struct iovec){ msg->wm_data.b_addr, msg->wm_data.b_nob };

	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* Skip what was sent. */
		while (mh.msg_iovlen > 0 && (size_t)n >= mh.msg_iov[0].iov_len) {
			n -= (ssize_t)mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + n;
			mh.msg_iov[0].iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

int m0sim_wire_recv(int fd, struct m0sim_wire_msg *msg, void **frame,
		    size_t *frame_size)
{
	uint8_t lenb[4];
	uint8_t *buf;
	uint32_t len, nf, l0, l1;
	int rc;

	*frame = NULL;
	rc = read_full(fd, lenb, 4);
	if (rc != 0)
		return rc;
	len = get32(lenb);
	if (len < M0SIM_WIRE_HDR || len > M0SIM_WIRE_MAX)
		return -EPROTO;
	buf = m0_alloc_nz(len);
	if (buf == NULL)
		return -ENOMEM;
	rc = read_full(fd, buf, len);
	if (rc != 0)
		goto err;
	rc = -EPROTO;
	if (get32(buf) != M0SIM_WIRE_MAGIC)
		goto err;
	msg->wm_opcode = get16(buf + 4);
	msg->wm_flags = get16(buf + 6);
	msg->wm_rc = (int32_t)get32(buf + 8);
	msg->wm_sender_id = get64(buf + 12);
	msg->wm_session_id = get64(buf + 20);
	msg->wm_xid = get64(buf + 28);
	nf = get32(buf + 36);
	l0 = get32(buf + 40);
	if (nf != 2 || l0 > len - M0SIM_WIRE_HDR)
		goto err;
	if (len - M0SIM_WIRE_HDR - l0 < 4)
		goto err;
	l1 = get32(buf + M0SIM_WIRE_HDR + l0);
	if (l1 != len - M0SIM_WIRE_HDR - l0 - 4)
		goto err;
	msg->wm_name = (struct m0_buf){ l0, buf + M0SIM_WIRE_HDR };
	msg->wm_data = (struct m0_buf){ l1, buf + M0SIM_WIRE_HDR + l0 + 4 };
	*frame = buf;
	*frame_size = len;
	return 0;
err:
	m0_free(buf);
	return rc;
}

void m0sim_wire_from_item(struct m0sim_wire_msg *msg, const struct m0_fop *fop,
			  bool reply)
{
	const struct m0_rpc_item *item = &fop->f_item;

	*msg = (struct m0sim_wire_msg){
		.wm_opcode = (uint16_t)item->ri_type->rit_opcode,
		.wm_flags = reply ? M0SIM_WIRE_REPLY : 0,
		.wm_rc = item->ri_error,
		.wm_sender_id = item->ri_header.osr_sender_id,
		.wm_session_id = item->ri_header.osr_session_id,
		.wm_xid = item->ri_header.osr_xid,
		.wm_name = fop->f_body.fb_name,
		.wm_data = fop->f_body.fb_data,
	};
}

/* ----------------------------------------------------------- end points */

void m0sim_ep_set(struct m0_net_end_point *ep, const char *ip, unsigned port)
{
	snprintf(ep->nep_addr_buf, sizeof ep->nep_addr_buf, "inet:tcp:%s@%u",
		 ip, port);
	ep->nep_addr = ep->nep_addr_buf;
}

int m0sim_ep_parse(const char *s, char *ip, size_t iplen, unsigned *port)
{
	const char *sep;
	char *end;
	unsigned long p;
	size_t n;

	if (strncmp(s, "inet:tcp:", 9) == 0) {
		s += 9;
		sep = strrchr(s, '@');
	} else {
		sep = strrchr(s, ':');
	}
	if (sep == NULL || sep == s)
		return -EINVAL;
	n = (size_t)(sep - s);
	if (n >= iplen)
		return -EINVAL;
	p = strtoul(sep + 1, &end, 10);
	if (*end != 0 || p == 0 || p > 65535)
		return -EINVAL;
	memcpy(ip, s, n);
	ip[n] = 0;
	*port = (unsigned)p;
	return 0;
}
