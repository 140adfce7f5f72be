/* reqh.c - request handler: admission, FOM creation, locality run queues,
 * handler threads, FOM phases and the operations themselves. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_REQH
#include "reqh.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The run queue and wait list tlist descriptors, as Motr's fom.c defines
 * them (M0_TL_DESCR_DEFINE(runq, "runq fom", static, struct m0_fom,
 * fo_linkage, fo_magic, ...)): tools check the magics through them. */
static const struct m0_tl_descr runq_tl __attribute__((used)) = {
	.td_name = "runq fom",
	.td_link_offset = offsetof(struct m0_fom, fo_linkage),
	.td_link_magic_offset = offsetof(struct m0_fom, fo_magic),
	.td_link_magic = M0_FOM_MAGIC,
	.td_head_magic = M0_FOM_RUNQ_MAGIC,
	.td_container_size = sizeof(struct m0_fom),
};
static const struct m0_tl_descr wail_tl __attribute__((used)) = {
	.td_name = "wail fom",
	.td_link_offset = offsetof(struct m0_fom, fo_linkage),
	.td_link_magic_offset = offsetof(struct m0_fom, fo_magic),
	.td_link_magic = M0_FOM_MAGIC,
	.td_head_magic = M0_FOM_WAIL_MAGIC,
	.td_container_size = sizeof(struct m0_fom),
};

static const struct m0_sm_state_descr fom_phases[M0_FOPH_PHASES_NR] = {
	[M0_FOPH_INIT] = { "init" },
	[M0_FOPH_FINISH] = { "finish" },
	[M0_FOPH_SUCCESS] = { "success" },
	[M0_FOPH_FAILURE] = { "failure" },
	[M0_FOPH_QUEUE_REPLY] = { "queue-reply" },
	[M0_FOPH_NR] = { "" },
	[M0_FOPH_TYPE_SPECIFIC] = { "type-specific" },
};

const struct m0_sm_conf m0_fom_phase_conf = {
	.scf_name = "fom phases",
	.scf_nr_states = M0_FOPH_PHASES_NR,
	.scf_state = fom_phases,
};

static const struct m0_sm_state_descr fom_states[M0_FOS_NR] = {
	[M0_FOS_INIT] = { "Init" },
	[M0_FOS_READY] = { "Ready" },
	[M0_FOS_RUNNING] = { "Running" },
	[M0_FOS_WAITING] = { "Waiting" },
	[M0_FOS_FINISH] = { "Finished" },
};

const struct m0_sm_conf m0_fom_state_conf = {
	.scf_name = "fom states",
	.scf_nr_states = M0_FOS_NR,
	.scf_state = fom_states,
};

static const struct m0_reqh_service_type service_types[M0SIM_SVC_NR] = {
	[M0SIM_SVC_IOS] = { "ioservice" },
	[M0SIM_SVC_MDS] = { "mdservice" },
	[M0SIM_SVC_SSS] = { "sss" },
};

static const char *ha_state_name(enum m0_ha_obj_state s)
{
	switch (s) {
	case M0_NC_ONLINE:
		return "online";
	case M0_NC_TRANSIENT:
		return "offline";
	case M0_NC_FAILED:
		return "failed";
	default:
		return "unknown";
	}
}

static struct m0_reqh *loc_reqh(const struct m0_fom_locality *loc)
{
	return container_of(loc->fl_dom, struct m0_reqh, rh_fom_dom);
}

static bool reqh_flag(const bool *flag)
{
	return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

/* --------------------------------------------------------------- FOMs */

static void fom_state_set(struct m0_fom *fom, enum m0_fom_state state)
{
	fom->fo_sm_state.sm_state = state;
	fom->fo_sm_state.sm_state_epoch = m0_time_now();
}

enum m0_fom_state m0sim_fom_state(const struct m0_fom *fom)
{
	return (enum m0_fom_state)fom->fo_sm_state.sm_state;
}

int m0_fom_phase(const struct m0_fom *fom)
{
	return (int)fom->fo_sm_phase.sm_state;
}

int m0_fom_rc(const struct m0_fom *fom)
{
	return fom->fo_sm_phase.sm_rc;
}

const char *m0_fom_phase_name(const struct m0_fom *fom)
{
	uint32_t p = fom->fo_sm_phase.sm_state;

	return p < M0_FOPH_PHASES_NR ? fom_phases[p].sd_name : "?";
}

M0_PROBE void m0_fom_phase_set(struct m0_fom *fom, int phase)
{
	M0_LOG(M0_DEBUG, "fom %p phase %s -> %s", fom, m0_fom_phase_name(fom),
	       (unsigned)phase < M0_FOPH_PHASES_NR ? fom_phases[phase].sd_name : "?");
	fom->fo_sm_phase.sm_state = (uint32_t)phase;
	fom->fo_sm_phase.sm_state_epoch = m0_time_now();
	fom->fo_transitions++;
}

M0_PROBE void m0_fom_phase_move(struct m0_fom *fom, int32_t rc, int phase)
{
	fom->fo_sm_phase.sm_rc = rc;
	m0_fom_phase_set(fom, phase);
}

M0_PROBE void m0_fom_init(struct m0_fom *fom, const struct m0_fom_type *fom_type,
			  const struct m0_fom_ops *ops, struct m0_fop *fop,
			  struct m0_fop *reply, struct m0_reqh *reqh)
{
	fom->fo_type = fom_type;
	fom->fo_ops = ops;
	fom->fo_fop = fop;
	fom->fo_rep_fop = reply;
	fom->fo_reqh = reqh;
	fom->fo_created = m0_time_now();
	fom->fo_magic = M0_FOM_MAGIC;
	fom->fo_sm_phase = (struct m0_sm){ .sm_state = M0_FOPH_INIT,
					   .sm_conf = &m0_fom_phase_conf,
					   .sm_state_epoch = fom->fo_created };
	fom->fo_sm_state = (struct m0_sm){ .sm_state = M0_FOS_INIT,
					   .sm_conf = &m0_fom_state_conf,
					   .sm_state_epoch = fom->fo_created };
	__atomic_add_fetch(&reqh->rh_fom_nr, 1, __ATOMIC_RELAXED);
}

/** Puts a FOM on its locality's run queue; a handler thread picks it up. */
M0_PROBE void m0_fom_queue(struct m0_fom *fom)
{
	struct m0_fom_locality *loc = fom->fo_loc;
	uint64_t v[2];

	pthread_mutex_lock(&loc->fl_lock);
	fom_state_set(fom, M0_FOS_READY);
	m0_tl_add_tail(&loc->fl_runq, &fom->fo_linkage);
	loc->fl_runq_nr++;
	v[0] = loc->fl_idx;
	v[1] = loc->fl_runq_nr;
	pthread_cond_broadcast(&loc->fl_cond);
	pthread_mutex_unlock(&loc->fl_lock);
	m0_addb2_add(M0_AVI_LOC_QUEUE, 2, v);
	M0_LOG(M0_DEBUG, "fom %p queued in locality %u (%u queued)", fom,
	       (unsigned)v[0], (unsigned)v[1]);
}

/** The FOM goes into blocking storage io: WAITING, on the wait list. */
M0_PROBE void m0_fom_block_enter(struct m0_fom *fom)
{
	struct m0_fom_locality *loc = fom->fo_loc;

	pthread_mutex_lock(&loc->fl_lock);
	fom_state_set(fom, M0_FOS_WAITING);
	m0_tl_add_tail(&loc->fl_wail, &fom->fo_linkage);
	loc->fl_wail_nr++;
	if (fom->fo_thread != NULL)
		fom->fo_thread->lt_state = BLOCKED;
	pthread_mutex_unlock(&loc->fl_lock);
}

M0_PROBE void m0_fom_block_leave(struct m0_fom *fom)
{
	struct m0_fom_locality *loc = fom->fo_loc;

	pthread_mutex_lock(&loc->fl_lock);
	m0_tl_del(&loc->fl_wail, &fom->fo_linkage);
	loc->fl_wail_nr--;
	fom_state_set(fom, M0_FOS_RUNNING);
	if (fom->fo_thread != NULL)
		fom->fo_thread->lt_state = HANDLER;
	pthread_mutex_unlock(&loc->fl_lock);
}

void m0sim_reqh_count(struct m0_reqh *reqh, const struct m0_fop_type *ft, int rc)
{
	__atomic_add_fetch(&reqh->rh_nr_served[ft->ft_idx], 1, __ATOMIC_RELAXED);
	if (rc != 0)
		__atomic_add_fetch(&reqh->rh_nr_failed[ft->ft_idx], 1,
				   __ATOMIC_RELAXED);
}

/** Ends a FOM after its reply was posted: counters, ADDB2, frees. */
M0_PROBE void m0_fom_fini(struct m0_fom *fom)
{
	struct m0_reqh *reqh = fom->fo_reqh;
	struct m0_fop *fop = fom->fo_fop;
	uint64_t v[4];

	fom_state_set(fom, M0_FOS_FINISH);
	v[0] = fop->f_type->ft_rpc_item_type.rit_opcode;
	v[1] = m0_time_now() - fom->fo_created;
	v[2] = (uint64_t)(int64_t)m0_fom_rc(fom);
	v[3] = fom->fo_loc_idx;
	m0_addb2_add(M0_AVI_FOM_REQ, 4, v);
	m0sim_reqh_count(reqh, fop->f_type, m0_fom_rc(fom));
	M0_LOG(M0_DEBUG, "fom %p fini: %s xid %" PRIu64 " rc %d", fom,
	       fop->f_type->ft_name, fop->f_item.ri_header.osr_xid, m0_fom_rc(fom));
	m0_fop_put(fom->fo_rep_fop);
	m0_fop_put(fop);
	fom->fo_magic = 0;
	m0_free(fom);
	__atomic_sub_fetch(&reqh->rh_fom_nr, 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------- operations */

typedef void (*json_fn)(void *arg, struct m0sim_sbuf *sb, int *rc,
			char *msg, size_t msglen);

/* Produces JSON into an m0_alloc()ed buffer, growing it until it fits. */
static int json_out(json_fn fn, void *arg, struct m0_buf *out, char *msg,
		    size_t msglen)
{
	size_t cap = 16384;
	int i, rc = 0;

	for (i = 0; i < 4; i++) {
		struct m0sim_sbuf sb;
		char *buf = m0_alloc_nz(cap);

		if (buf == NULL)
			return -ENOMEM;
		m0sim_sb_init(&sb, buf, cap);
		rc = 0;
		fn(arg, &sb, &rc, msg, msglen);
		if (rc != 0 || sb.sb_len < cap) {
			if (rc != 0) {
				m0_free(buf);
				return rc;
			}
			*out = (struct m0_buf){ sb.sb_len, buf };
			return 0;
		}
		m0_free(buf);
		cap = sb.sb_len + 4096;
	}
	return -E2BIG;
}

struct obj_json_arg {
	struct m0sim_store *oj_st;
	const struct m0_buf *oj_name;
	bool oj_info;
};

static void obj_json_fn(void *arg, struct m0sim_sbuf *sb, int *rc, char *msg,
			size_t msglen)
{
	struct obj_json_arg *a = arg;

	*rc = a->oj_info ?
		m0sim_obj_info_json(a->oj_st, a->oj_name->b_addr,
				    a->oj_name->b_nob, sb, msg, msglen) :
		m0sim_obj_getattr_json(a->oj_st, a->oj_name->b_addr,
				       a->oj_name->b_nob, sb, msg, msglen);
}

static void stats_json_fn(void *arg, struct m0sim_sbuf *sb, int *rc, char *msg,
			  size_t msglen)
{
	(void)rc;
	(void)msg;
	(void)msglen;
	m0sim_reqh_stats_json(arg, sb);
}

/* Runs the operation of a FOM; fills the reply data (or an error text). */
static int fom_op_exec(struct m0_fom *fom, struct m0_buf *out, char *msg,
		       size_t msglen)
{
	struct m0_reqh *reqh = fom->fo_reqh;
	struct m0sim_store *st = reqh->rh_store;
	const struct m0sim_fop_body *b = fom->fo_fop->f_data.fd_data;
	const char *name = b->fb_name.b_addr;
	size_t nlen = b->fb_name.b_nob;
	struct obj_json_arg oj = { st, &b->fb_name, false };

	switch (fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode) {
	case M0_IOSERVICE_COB_CREATE_OPCODE:
		return m0sim_obj_create(st, name, nlen, msg, msglen);
	case M0_IOSERVICE_WRITEV_OPCODE:
		return m0sim_obj_write(st, name, nlen, b->fb_data.b_addr,
				       b->fb_data.b_nob, msg, msglen);
	case M0_IOSERVICE_READV_OPCODE:
		return m0sim_obj_read(st, name, nlen, out, msg, msglen);
	case M0_IOSERVICE_COB_DELETE_OPCODE:
		return m0sim_obj_delete(st, name, nlen, msg, msglen);
	case M0_IOSERVICE_GETATTR_OPCODE:
		return json_out(obj_json_fn, &oj, out, msg, msglen);
	case M0SIM_OBJINFO_OPCODE:
		oj.oj_info = true;
		return json_out(obj_json_fn, &oj, out, msg, msglen);
	case M0SIM_STATS_OPCODE:
		return json_out(stats_json_fn, reqh, out, msg, msglen);
	default:
		snprintf(msg, msglen, "opcode %u is not handled by the reqh",
			 fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode);
		return -EOPNOTSUPP;
	}
}

static struct m0_fop *reply_fop(const struct m0_fop *req)
{
	struct m0_fop *rep = m0_fop_alloc(req->f_type);

	if (rep == NULL)
		return NULL;
	rep->f_item.ri_header = req->f_item.ri_header;
	rep->f_item.ri_session = req->f_item.ri_session;
	rep->f_item.ri_rmachine = req->f_item.ri_rmachine;
	rep->f_item.ri_conn = req->f_item.ri_conn;   /* req holds the ref */
	return rep;
}

/** The tick of every m0sim FOM: INIT -> TYPE_SPECIFIC (the operation, in
 * blocking io) -> SUCCESS|FAILURE -> QUEUE_REPLY (reply posted) -> FINISH. */
static int fom_tick(struct m0_fom *fom)
{
	struct m0_reqh *reqh = fom->fo_reqh;

	switch (m0_fom_phase(fom)) {
	case M0_FOPH_INIT:
		m0_fom_phase_set(fom, M0_FOPH_TYPE_SPECIFIC);
		return M0_FSO_AGAIN;
	case M0_FOPH_TYPE_SPECIFIC: {
		struct m0_buf out = { 0, NULL };
		char msg[512] = "";
		int rc;

		fom->fo_rep_fop = reply_fop(fom->fo_fop);
		if (fom->fo_rep_fop == NULL) {
			m0_fom_phase_move(fom, -ENOMEM, M0_FOPH_FAILURE);
			return M0_FSO_AGAIN;
		}
		m0_fom_block_enter(fom);
		if (reqh->rh_handler_delay_us > 0)
			usleep((useconds_t)reqh->rh_handler_delay_us);
		rc = fom_op_exec(fom, &out, msg, sizeof msg);
		m0_fom_block_leave(fom);
		if (rc == 0) {
			fom->fo_rep_fop->f_body.fb_data = out;
			fom->fo_rep_fop->f_body.fb_data_owned = out.b_addr != NULL;
		} else {
			m0_free(out.b_addr);
			if (msg[0] == 0)
				snprintf(msg, sizeof msg, "%s", strerror(-rc));
			m0sim_fop_data_set(fom->fo_rep_fop, msg, strlen(msg));
		}
		m0_fom_phase_move(fom, rc, rc == 0 ? M0_FOPH_SUCCESS : M0_FOPH_FAILURE);
		return M0_FSO_AGAIN;
	}
	case M0_FOPH_SUCCESS:
	case M0_FOPH_FAILURE:
		m0_fom_phase_set(fom, M0_FOPH_QUEUE_REPLY);
		return M0_FSO_AGAIN;
	case M0_FOPH_QUEUE_REPLY:
		if (fom->fo_rep_fop != NULL) {
			fom->fo_rep_fop->f_item.ri_error = m0_fom_rc(fom);
			m0_rpc_post(&fom->fo_rep_fop->f_item);
		}
		m0_fom_phase_set(fom, M0_FOPH_FINISH);
		return M0_FSO_WAIT;
	default:
		m0_fom_phase_move(fom, -EINVAL, M0_FOPH_FINISH);
		return M0_FSO_WAIT;
	}
}

/* Locality of a FOM: by object name (operations on one object keep their
 * order), else round robin.  The high half of the hash is used: FNV-1a's
 * low bits mix poorly. */
static size_t fom_home_locality(const struct m0_fom *fom)
{
	static uint64_t rr;
	const struct m0sim_fop_body *b = fom->fo_fop->f_data.fd_data;

	if (b->fb_name.b_nob > 0)
		return (size_t)(m0sim_fnv1a64(M0SIM_ID_LO_BASIS, b->fb_name.b_addr,
					      b->fb_name.b_nob) >> 32);
	return (size_t)__atomic_fetch_add(&rr, 1, __ATOMIC_RELAXED);
}

static void fom_fini_op(struct m0_fom *fom)
{
	m0_fom_fini(fom);
}

static const struct m0_fom_ops m0sim_fom_ops = {
	.fo_fini = fom_fini_op,
	.fo_tick = fom_tick,
	.fo_home_locality = fom_home_locality,
};

/* Runs a FOM until it waits or finishes (Motr's static fom_exec()). */
static __attribute__((noinline)) void fom_exec(struct m0_fom *fom)
{
	int outcome;

	do {
		outcome = fom->fo_ops->fo_tick(fom);
	} while (outcome == M0_FSO_AGAIN && m0_fom_phase(fom) != M0_FOPH_FINISH);
	if (m0_fom_phase(fom) == M0_FOPH_FINISH)
		fom->fo_ops->fo_fini(fom);
}

/* --------------------------------------------------- handler threads */

static void *loc_handler(void *arg)
{
	struct m0_loc_thread *lt = arg;
	struct m0_fom_locality *loc = lt->lt_loc;
	struct m0_reqh *reqh = loc_reqh(loc);

	pthread_mutex_lock(&loc->fl_lock);
	for (;;) {
		struct m0_tlink *l;
		struct m0_fom *fom;

		/* Paused handlers leave FOMs queued; stopping drains. */
		while (m0_tl_is_empty(&loc->fl_runq) ||
		       (reqh_flag(&reqh->rh_paused) && !reqh_flag(&reqh->rh_stopping))) {
			if (m0_tl_is_empty(&loc->fl_runq) &&
			    reqh_flag(&reqh->rh_stopping))
				goto out;
			lt->lt_state = IDLE;
			pthread_cond_wait(&loc->fl_cond, &loc->fl_lock);
		}
		l = m0_tl_head(&loc->fl_runq);
		m0_tl_del(&loc->fl_runq, l);
		loc->fl_runq_nr--;
		loc->fl_running++;
		lt->lt_state = HANDLER;
		fom = container_of(l, struct m0_fom, fo_linkage);
		fom->fo_thread = lt;
		fom_state_set(fom, M0_FOS_RUNNING);
		pthread_mutex_unlock(&loc->fl_lock);

		fom_exec(fom);

		pthread_mutex_lock(&loc->fl_lock);
		loc->fl_running--;
		loc->fl_served++;
		pthread_cond_broadcast(&loc->fl_cond);   /* pause waits on this */
	}
out:
	pthread_mutex_unlock(&loc->fl_lock);
	return NULL;
}

/* ------------------------------------------------------------- the reqh */

/** Admission: is the handler running and the fop's service online? */
M0_PROBE int m0_reqh_fop_allow(struct m0_reqh *reqh, struct m0_fop *fop)
{
	const struct m0_fop_type *ft = fop->f_type;

	if (reqh_flag(&reqh->rh_stopping))
		return -ESHUTDOWN;
	if (ft->ft_service < 0 || ft->ft_service >= M0SIM_SVC_NR)
		return -EOPNOTSUPP;
	switch (__atomic_load_n(&reqh->rh_services[ft->ft_service].rs_ha_state,
				__ATOMIC_ACQUIRE)) {
	case M0_NC_ONLINE:
		return 0;
	case M0_NC_FAILED:
		return -EHOSTDOWN;
	default:
		return -ESHUTDOWN;
	}
}

/** Accepts a request: creates its FOM and queues it.  A refused request is
 * answered here with an error reply; the rc is returned too. */
M0_PROBE int m0_reqh_fop_handle(struct m0_reqh *reqh, struct m0_fop *fop)
{
	struct m0_fom_domain *dom = &reqh->rh_fom_dom;
	struct m0_fom *fom = NULL;
	size_t idx;
	int rc;

	rc = m0_reqh_fop_allow(reqh, fop);
	if (rc == 0) {
		fom = m0_alloc(sizeof *fom);
		if (fom == NULL)
			rc = -ENOMEM;
	}
	if (rc != 0) {
		char msg[160];

		if (fop->f_type->ft_service >= 0 && fop->f_type->ft_service < M0SIM_SVC_NR &&
		    (rc == -ESHUTDOWN || rc == -EHOSTDOWN) &&
		    !reqh_flag(&reqh->rh_stopping)) {
			const struct m0_reqh_service *svc =
				&reqh->rh_services[fop->f_type->ft_service];

			snprintf(msg, sizeof msg, "service %s is %s: %s refused",
				 svc->rs_type->rst_name,
				 ha_state_name(__atomic_load_n(&svc->rs_ha_state,
							       __ATOMIC_ACQUIRE)),
				 fop->f_type->ft_name);
		} else {
			snprintf(msg, sizeof msg, "request handler refused %s: %s",
				 fop->f_type->ft_name, strerror(-rc));
		}
		__atomic_add_fetch(&reqh->rh_nr_refused[fop->f_type->ft_idx], 1,
				   __ATOMIC_RELAXED);
		M0_LOG(M0_WARN, "refused %s xid %" PRIu64 ": %d", fop->f_type->ft_name,
		       fop->f_item.ri_header.osr_xid, rc);
		m0sim_rpc_reply(fop, rc, msg, strlen(msg));
		return rc;
	}
	m0_fop_get(fop);   /* the FOM's reference */
	m0_fom_init(fom, &fop->f_type->ft_fom_type, &m0sim_fom_ops, fop, NULL, reqh);
	fom->fo_service = &reqh->rh_services[fop->f_type->ft_service];
	idx = fom->fo_ops->fo_home_locality(fom) % dom->fd_localities_nr;
	fom->fo_loc = dom->fd_localities[idx];
	fom->fo_loc_idx = idx;
	M0_LOG(M0_DEBUG, "fop %s xid %" PRIu64 " -> fom %p locality %u",
	       fop->f_type->ft_name, fop->f_item.ri_header.osr_xid, fom,
	       (unsigned)idx);
	m0_fom_queue(fom);
	return 0;
}

int m0sim_reqh_init(struct m0_reqh *reqh, struct m0sim_store *st,
		    struct m0_rpc_machine *m, uint32_t nr_loc, uint64_t delay_us,
		    char *err, size_t errlen)
{
	struct m0_fom_domain *dom = &reqh->rh_fom_dom;
	uint32_t i;
	int s;

	memset(reqh, 0, sizeof *reqh);
	if (nr_loc < 1 || nr_loc > 64) {
		snprintf(err, errlen, "localities must be 1..64");
		return -EINVAL;
	}
	reqh->rh_store = st;
	reqh->rh_rpc_machine = m;
	reqh->rh_handler_delay_us = delay_us;
	reqh->rh_started = m0_time_now();
	for (s = 0; s < M0SIM_SVC_NR; s++) {
		reqh->rh_services[s].rs_type = &service_types[s];
		reqh->rh_services[s].rs_reqh = reqh;
		reqh->rh_services[s].rs_ha_state = M0_NC_ONLINE;
	}
	dom->fd_localities = calloc(nr_loc, sizeof *dom->fd_localities);
	if (dom->fd_localities == NULL)
		return -ENOMEM;
	for (i = 0; i < nr_loc; i++) {
		struct m0_fom_locality *loc = calloc(1, sizeof *loc);

		if (loc == NULL)
			return -ENOMEM;
		dom->fd_localities[i] = loc;
		dom->fd_localities_nr = i + 1;
		loc->fl_dom = dom;
		loc->fl_idx = i;
		m0_tl_init(&loc->fl_runq);
		m0_tl_init(&loc->fl_wail);
		loc->fl_runq.t_magic = runq_tl.td_head_magic;
		loc->fl_wail.t_magic = wail_tl.td_head_magic;
		pthread_mutex_init(&loc->fl_lock, NULL);
		pthread_cond_init(&loc->fl_cond, NULL);
		loc->fl_threads = calloc(1, sizeof *loc->fl_threads);
		if (loc->fl_threads == NULL)
			return -ENOMEM;
		loc->fl_threads[0].lt_loc = loc;
		loc->fl_threads[0].lt_idx = 0;
		if (pthread_create(&loc->fl_threads[0].lt_thread, NULL, loc_handler,
				   &loc->fl_threads[0]) != 0) {
			snprintf(err, errlen, "cannot start handler thread");
			return -EAGAIN;
		}
		loc->fl_threads_nr = 1;
	}
	return 0;
}

static void reqh_wake_all(struct m0_reqh *reqh)
{
	size_t i;

	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];

		pthread_mutex_lock(&loc->fl_lock);
		pthread_cond_broadcast(&loc->fl_cond);
		pthread_mutex_unlock(&loc->fl_lock);
	}
}

void m0sim_reqh_shutdown(struct m0_reqh *reqh)
{
	size_t i;
	uint32_t t;

	__atomic_store_n(&reqh->rh_stopping, true, __ATOMIC_RELEASE);
	reqh_wake_all(reqh);
	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];

		for (t = 0; t < loc->fl_threads_nr; t++)
			pthread_join(loc->fl_threads[t].lt_thread, NULL);
		loc->fl_threads_nr = 0;
	}
}

void m0sim_reqh_fini(struct m0_reqh *reqh)
{
	size_t i;

	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];

		pthread_mutex_destroy(&loc->fl_lock);
		pthread_cond_destroy(&loc->fl_cond);
		free(loc->fl_threads);
		free(loc);
	}
	free(reqh->rh_fom_dom.fd_localities);
	reqh->rh_fom_dom.fd_localities = NULL;
	reqh->rh_fom_dom.fd_localities_nr = 0;
}

/** Handlers stop taking FOMs off the run queues; returns once no FOM is
 * executing.  Arriving requests keep queueing. */
int m0sim_reqh_pause_(struct m0_reqh *reqh)
{
	size_t i;

	__atomic_store_n(&reqh->rh_paused, true, __ATOMIC_RELEASE);
	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];

		pthread_mutex_lock(&loc->fl_lock);
		while (loc->fl_running > 0)
			pthread_cond_wait(&loc->fl_cond, &loc->fl_lock);
		pthread_mutex_unlock(&loc->fl_lock);
	}
	M0_LOG(M0_NOTICE, "request handler paused");
	return 0;
}

int m0sim_reqh_resume_(struct m0_reqh *reqh)
{
	__atomic_store_n(&reqh->rh_paused, false, __ATOMIC_RELEASE);
	reqh_wake_all(reqh);
	M0_LOG(M0_NOTICE, "request handler resumed");
	return 0;
}

int m0sim_reqh_service_state_set(struct m0_reqh *reqh, const char *service,
				 const char *state)
{
	enum m0_ha_obj_state s;
	int i;

	if (strcmp(state, "online") == 0)
		s = M0_NC_ONLINE;
	else if (strcmp(state, "offline") == 0)
		s = M0_NC_TRANSIENT;
	else if (strcmp(state, "failed") == 0)
		s = M0_NC_FAILED;
	else
		return -EINVAL;
	for (i = 0; i < M0SIM_SVC_NR; i++) {
		struct m0_reqh_service *svc = &reqh->rh_services[i];

		if (strcmp(svc->rs_type->rst_name, service) == 0) {
			__atomic_store_n(&svc->rs_ha_state, s, __ATOMIC_RELEASE);
			M0_LOG(M0_NOTICE, "service %s is now %s", svc->rs_type->rst_name,
			       ha_state_name(s));
			return 0;
		}
	}
	return -ENOENT;
}

static void counters_json(struct m0sim_sbuf *sb, const char *label,
			  const uint64_t *c)
{
	size_t i;
	bool first = true;

	m0sim_sb_printf(sb, "\"%s\":{", label);
	for (i = 0; i < M0SIM_FOPT_NR; i++) {
		const struct m0_fop_type *ft = m0sim_fop_types[i];

		if (ft->ft_service == M0SIM_SVC_NONE)
			continue;
		m0sim_sb_printf(sb, "%s\"%s\":%" PRIu64, first ? "" : ",", ft->ft_name,
				__atomic_load_n(&c[ft->ft_idx], __ATOMIC_RELAXED));
		first = false;
	}
	m0sim_sb_printf(sb, "}");
}

extern uint64_t m0sim_trace_nr;
extern uint64_t m0sim_addb2_nr;

void m0sim_reqh_stats_json(struct m0_reqh *reqh, struct m0sim_sbuf *sb)
{
	struct m0sim_mem_stats ms;
	size_t i, queued = 0, waiting = 0, running = 0;
	int s;

	m0sim_sb_printf(sb, "{\"uptime_s\":%.3f,\"paused\":%s,",
			(double)(m0_time_now() - reqh->rh_started) / 1e9,
			reqh_flag(&reqh->rh_paused) ? "true" : "false");
	counters_json(sb, "requests", reqh->rh_nr_served);
	m0sim_sb_printf(sb, ",");
	counters_json(sb, "failed", reqh->rh_nr_failed);
	m0sim_sb_printf(sb, ",");
	counters_json(sb, "refused", reqh->rh_nr_refused);
	m0sim_sb_printf(sb, ",\"admin\":%" PRIu64 ",\"localities\":[",
			__atomic_load_n(&reqh->rh_nr_served[m0sim_fop_admin_fopt.ft_idx],
					__ATOMIC_RELAXED));
	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];

		pthread_mutex_lock(&loc->fl_lock);
		m0sim_sb_printf(sb, "%s{\"idx\":%zu,\"runq\":%zu,\"wail\":%zu,"
				"\"running\":%u,\"served\":%" PRIu64 "}", i ? "," : "",
				loc->fl_idx, loc->fl_runq_nr, loc->fl_wail_nr,
				loc->fl_running, loc->fl_served);
		queued += loc->fl_runq_nr;
		waiting += loc->fl_wail_nr;
		running += loc->fl_running;
		pthread_mutex_unlock(&loc->fl_lock);
	}
	m0sim_sb_printf(sb, "],\"queued\":%zu,\"running\":%zu,\"waiting\":%zu,"
			"\"foms\":%" PRIu64 ",\"services\":{", queued, running, waiting,
			__atomic_load_n(&reqh->rh_fom_nr, __ATOMIC_RELAXED));
	for (s = 0; s < M0SIM_SVC_NR; s++) {
		const struct m0_reqh_service *svc = &reqh->rh_services[s];

		m0sim_sb_printf(sb, "%s\"%s\":\"%s\"", s ? "," : "",
				svc->rs_type->rst_name,
				ha_state_name(__atomic_load_n(&svc->rs_ha_state,
							      __ATOMIC_ACQUIRE)));
	}
	m0sim_sb_printf(sb, "},");
	m0sim_rpc_stats_json(reqh->rh_rpc_machine, sb);
	m0sim_mem_stats(&ms);
	m0sim_sb_printf(sb, ",\"mem\":{\"bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
			",\"frees\":%" PRIu64 "},\"store\":", ms.ms_bytes,
			ms.ms_allocs, ms.ms_frees);
	m0sim_store_stats_json(reqh->rh_store, sb);
	m0sim_sb_printf(sb, ",\"trace_records\":%" PRIu64 ",\"addb2_records\":%" PRIu64
			"}", __atomic_load_n(&m0sim_trace_nr, __ATOMIC_RELAXED),
			__atomic_load_n(&m0sim_addb2_nr, __ATOMIC_RELAXED));
}

static void fom_json(struct m0sim_sbuf *sb, const struct m0_fom *fom,
		     const char *list, bool *first)
{
	const struct m0_fop *fop = fom->fo_fop;
	const struct m0sim_fop_body *b = fop->f_data.fd_data;
	const struct m0_rpc_item_header2 *h = &fop->f_item.ri_header;

	m0sim_sb_printf(sb, "%s{\"loc\":%zu,\"list\":\"%s\",\"state\":\"%s\","
			"\"phase\":\"%s\",\"op\":\"%s\",\"opcode\":%u,\"xid\":%" PRIu64
			",\"session_id\":%" PRIu64 ",\"sender_id\":%" PRIu64 ",\"name\":",
			*first ? "" : ",", fom->fo_loc_idx, list,
			fom_states[fom->fo_sm_state.sm_state].sd_name,
			m0_fom_phase_name(fom), fop->f_type->ft_name,
			fop->f_type->ft_rpc_item_type.rit_opcode, h->osr_xid,
			h->osr_session_id, h->osr_sender_id);
	m0sim_sb_json_str(sb, b->fb_name.b_addr, b->fb_name.b_nob);
	m0sim_sb_printf(sb, ",\"age_us\":%" PRIu64 "}",
			(m0_time_now() - fom->fo_created) / 1000);
	*first = false;
}

/** Lists queued (runq) and blocked (wail) FOMs of every locality. */
void m0sim_reqh_queue_json(struct m0_reqh *reqh, struct m0sim_sbuf *sb)
{
	bool first = true;
	size_t i;

	m0sim_sb_printf(sb, "{\"paused\":%s,\"foms\":[",
			reqh_flag(&reqh->rh_paused) ? "true" : "false");
	for (i = 0; i < reqh->rh_fom_dom.fd_localities_nr; i++) {
		struct m0_fom_locality *loc = reqh->rh_fom_dom.fd_localities[i];
		struct m0_tlink *l;

		pthread_mutex_lock(&loc->fl_lock);
		for (l = m0_tl_head(&loc->fl_runq); l != NULL;
		     l = m0_tl_next(&loc->fl_runq, l))
			fom_json(sb, container_of(l, struct m0_fom, fo_linkage),
				 "runq", &first);
		for (l = m0_tl_head(&loc->fl_wail); l != NULL;
		     l = m0_tl_next(&loc->fl_wail, l))
			fom_json(sb, container_of(l, struct m0_fom, fo_linkage),
				 "wail", &first);
		pthread_mutex_unlock(&loc->fl_lock);
	}
	m0sim_sb_printf(sb, "]}");
}
