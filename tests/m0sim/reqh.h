/* reqh.h - request handler: services, localities, FOMs. */
#ifndef M0SIM_REQH_H
#define M0SIM_REQH_H

#include "rpc.h"
#include "store.h"

#include <pthread.h>

/** FOM states (fo_sm_state.sm_state). */
enum m0_fom_state {
	M0_FOS_INIT,
	M0_FOS_READY,
	M0_FOS_RUNNING,
	M0_FOS_WAITING,
	M0_FOS_FINISH,
	M0_FOS_NR,
};

/** Generic FOM phases (fo_sm_phase.sm_state): 0 and 1 are INIT and FINISH
 * as in Motr; m0sim uses a subset of Motr's standard phases. */
enum m0_fom_phase {
	M0_FOM_PHASE_INIT = 0,
	M0_FOM_PHASE_FINISH = 1,
	M0_FOM_PHASE_NR,
};

enum m0_fom_standard_phase {
	M0_FOPH_INIT = M0_FOM_PHASE_INIT,
	M0_FOPH_FINISH = M0_FOM_PHASE_FINISH,
	M0_FOPH_SUCCESS = M0_FOM_PHASE_NR,
	M0_FOPH_FAILURE,
	M0_FOPH_QUEUE_REPLY,
	M0_FOPH_NR,
	M0_FOPH_TYPE_SPECIFIC = M0_FOPH_NR + 1,   /* the operation itself */
	M0_FOPH_PHASES_NR,
};

/** What a tick wants next. */
enum m0_fom_state_outcome {
	M0_FSO_AGAIN = 1,
	M0_FSO_WAIT = 2,
};

struct m0_sm_state_descr {
	const char *sd_name;
};

struct m0_sm_conf {
	const char *scf_name;
	uint32_t scf_nr_states;
	const struct m0_sm_state_descr *scf_state;
};

/** State machine: sm_conf->scf_state[sm_state].sd_name names the state. */
struct m0_sm {
	uint32_t sm_state;
	const struct m0_sm_conf *sm_conf;
	m0_time_t sm_state_epoch;
	int32_t sm_rc;
};

struct m0_fom;

struct m0_fom_ops {
	void (*fo_fini)(struct m0_fom *fom);
	int (*fo_tick)(struct m0_fom *fom);
	size_t (*fo_home_locality)(const struct m0_fom *fom);
};

enum m0_loc_thread_state {
	HANDLER,
	BLOCKED,
	IDLE,
};

/** A handler thread of a locality. */
struct m0_loc_thread {
	pthread_t lt_thread;
	struct m0_fom_locality *lt_loc;
	uint32_t lt_idx;
	enum m0_loc_thread_state lt_state;
};

/** One locality: a run queue and its handler thread(s).  fl_runq holds
 * READY FOMs (linked through fo_linkage); fl_wail the FOMs blocked in
 * storage io (WAITING). */
struct m0_fom_locality {
	struct m0_fom_domain *fl_dom;
	struct m0_tl fl_runq;
	size_t fl_runq_nr;
	struct m0_tl fl_wail;
	size_t fl_wail_nr;
	size_t fl_idx;
	pthread_mutex_t fl_lock;
	pthread_cond_t fl_cond;
	struct m0_loc_thread *fl_threads;
	uint32_t fl_threads_nr;
	uint32_t fl_running;     /* FOMs a handler is executing */
	uint64_t fl_served;
};

struct m0_fom_domain {
	struct m0_fom_locality **fd_localities;
	size_t fd_localities_nr;
};

struct m0_reqh_service_type {
	const char *rst_name;
};

/** HA state of a service (Motr's m0_ha_obj_state subset). */
enum m0_ha_obj_state {
	M0_NC_UNKNOWN,
	M0_NC_ONLINE,
	M0_NC_FAILED,
	M0_NC_TRANSIENT,   /* "offline" */
};

struct m0_reqh_service {
	const struct m0_reqh_service_type *rs_type;
	struct m0_reqh *rs_reqh;
	enum m0_ha_obj_state rs_ha_state;   /* atomic access */
};

/** File operation machine: the execution of one request. */
struct m0_fom {
	struct m0_fom_locality *fo_loc;
	size_t fo_loc_idx;
	const struct m0_fom_type *fo_type;
	const struct m0_fom_ops *fo_ops;
	struct m0_fop *fo_fop;
	struct m0_fop *fo_rep_fop;
	struct m0_reqh_service *fo_service;
	struct m0_sm fo_sm_phase;
	struct m0_sm fo_sm_state;
	struct m0_loc_thread *fo_thread;
	struct m0_tlink fo_linkage;
	uint64_t fo_magic;       /* M0_FOM_MAGIC while alive */
	uint64_t fo_transitions;
	m0_time_t fo_created;    /* m0sim */
	struct m0_reqh *fo_reqh; /* m0sim */
};

struct m0_reqh {
	struct m0_fom_domain rh_fom_dom;
	struct m0_reqh_service rh_services[M0SIM_SVC_NR];
	struct m0sim_store *rh_store;
	struct m0_rpc_machine *rh_rpc_machine;
	uint64_t rh_handler_delay_us;
	bool rh_paused;          /* atomic access */
	bool rh_stopping;        /* atomic access */
	uint64_t rh_fom_nr;      /* FOMs alive */
	uint64_t rh_nr_served[M0SIM_FOPT_NR];   /* finished, by fop type */
	uint64_t rh_nr_failed[M0SIM_FOPT_NR];   /* of those, rc != 0 */
	uint64_t rh_nr_refused[M0SIM_FOPT_NR];  /* not admitted */
	m0_time_t rh_started;
};

/* Magics of the run queue and wait list descriptors (runq_tl, wail_tl). */
#define M0_FOM_MAGIC 0x33fab1e5f0a1ed01ULL
#define M0_FOM_RUNQ_MAGIC 0x33c0ffeea11e0001ULL
#define M0_FOM_WAIL_MAGIC 0x33c0ffeea11e0002ULL

extern const struct m0_sm_conf m0_fom_phase_conf;
extern const struct m0_sm_conf m0_fom_state_conf;

int m0sim_reqh_init(struct m0_reqh *reqh, struct m0sim_store *st,
		    struct m0_rpc_machine *m, uint32_t nr_loc,
		    uint64_t delay_us, char *err, size_t errlen);
/** Stops admitting requests, runs the queued ones, joins the handlers. */
void m0sim_reqh_shutdown(struct m0_reqh *reqh);
void m0sim_reqh_fini(struct m0_reqh *reqh);

int m0_reqh_fop_allow(struct m0_reqh *reqh, struct m0_fop *fop);
int m0_reqh_fop_handle(struct m0_reqh *reqh, struct m0_fop *fop);
void m0_fom_init(struct m0_fom *fom, const struct m0_fom_type *fom_type,
		 const struct m0_fom_ops *ops, struct m0_fop *fop,
		 struct m0_fop *reply, struct m0_reqh *reqh);
void m0_fom_queue(struct m0_fom *fom);
void m0_fom_fini(struct m0_fom *fom);
void m0_fom_phase_set(struct m0_fom *fom, int phase);
void m0_fom_phase_move(struct m0_fom *fom, int32_t rc, int phase);
int m0_fom_phase(const struct m0_fom *fom);
int m0_fom_rc(const struct m0_fom *fom);
enum m0_fom_state m0sim_fom_state(const struct m0_fom *fom);
const char *m0_fom_phase_name(const struct m0_fom *fom);
void m0_fom_block_enter(struct m0_fom *fom);
void m0_fom_block_leave(struct m0_fom *fom);

int m0sim_reqh_pause_(struct m0_reqh *reqh);
int m0sim_reqh_resume_(struct m0_reqh *reqh);
int m0sim_reqh_service_state_set(struct m0_reqh *reqh, const char *service,
				 const char *state);
void m0sim_reqh_stats_json(struct m0_reqh *reqh, struct m0sim_sbuf *sb);
void m0sim_reqh_queue_json(struct m0_reqh *reqh, struct m0sim_sbuf *sb);
void m0sim_reqh_count(struct m0_reqh *reqh, const struct m0_fop_type *ft,
		      int rc);

/* Server rpc (rpc.c). */
int m0sim_rpc_start(struct m0_rpc_machine *m, struct m0_reqh *reqh,
		    unsigned port, char *err, size_t errlen);
/** Closes the listener and every connection (their sessions terminate);
 * returns when no reader thread is left. */
void m0sim_rpc_stop(struct m0_rpc_machine *m);
/** Waits until every connection is released (queued FOMs hold them). */
void m0sim_rpc_wait_idle(struct m0_rpc_machine *m);
/** Waits for idle, then frees the machine's locks. */
void m0sim_rpc_fini(struct m0_rpc_machine *m);
/** Replies to a request with rc and data (copied). */
int m0sim_rpc_reply(struct m0_fop *req, int rc, const void *data, size_t len);
int m0sim_rpc_session_reset(struct m0_rpc_machine *m, uint64_t session_id);
/** Appends "connections", "sessions_open", "sessions" and item counters. */
void m0sim_rpc_stats_json(struct m0_rpc_machine *m, struct m0sim_sbuf *sb);

#endif /* M0SIM_REQH_H */
