/* be.h - metadata back end: a paged B-tree made durable by a write-ahead
 * log (Motr's be/ layer, much simplified).
 *
 * The segment file meta.db is an array of 8 KiB pages: page 0 is the
 * superblock, the others are B-tree nodes.  All pages are cached in memory.
 * A transaction collects after-images of the pages it changes; commit
 * appends them as one checksummed record to meta.wal, fsyncs it, then writes
 * the pages in place.  A checkpoint (when the log passes 8 MiB and at close)
 * fsyncs meta.db and empties the log.  Opening replays every complete log
 * record, so a transaction is either entirely present or absent after a
 * crash at any point. */
#ifndef M0SIM_BE_H
#define M0SIM_BE_H

#include "m0sim.h"

#include <pthread.h>

enum {
	BE_NODE_SIZE = 8192,
	BE_KEY_MAX = 255,
	BE_VAL_MAX = 2048,
	BE_WAL_MAX = 8 << 20,     /* checkpoint when the log is larger */
};

/** Superblock: page 0 of meta.db. */
struct be_sb {
	uint64_t sb_magic;
	uint32_t sb_version;
	uint32_t sb_node_size;
	uint32_t sb_root;       /* root node page */
	uint32_t sb_npages;     /* pages in use, including the superblock */
	uint32_t sb_height;     /* levels; 1 = the root is a leaf */
	uint32_t sb_devices;    /* store: data devices */
	uint32_t sb_block_size; /* store: block size */
	uint32_t sb_pad;
	uint64_t sb_lsn;        /* last committed transaction */
};

/** Segment: the page file, its log and the page cache. */
struct m0_be_seg {
	int seg_db_fd;
	int seg_wal_fd;
	uint8_t **seg_pages;        /* page cache, seg_pages_cap entries */
	uint32_t seg_pages_cap;
	uint64_t seg_wal_off;       /* bytes in the log */
	bool seg_sync;              /* fsync log and checkpoints */
	pthread_mutex_t seg_lock;   /* recursive; held by an open transaction */
	struct m0_be_tx *seg_tx;    /* the open transaction, if any */
	uint64_t seg_nr_tx;         /* committed since open */
	uint64_t seg_nr_checkpoints;
	uint64_t seg_replayed;      /* log records replayed at open */
};

enum m0_be_tx_state {
	M0_BTS_PREPARE = 1,
	M0_BTS_ACTIVE,
	M0_BTS_DONE,
};

/** Transaction: the pages it changed and their before-images (for abort). */
struct m0_be_tx {
	struct m0_be_seg *t_seg;
	uint64_t t_id;              /* lsn it will commit as */
	enum m0_be_tx_state t_state;
	uint32_t t_nr;
	uint32_t t_cap;
	uint32_t *t_pgno;
	uint8_t **t_before;         /* NULL for pages allocated by the tx */
	m0_time_t t_start;
};

struct m0_btree_key {
	struct m0_buf k_data;
};

struct m0_btree_rec {
	struct m0_btree_key r_key;
	struct m0_buf r_val;
	uint32_t r_flags;
};

/** Callback given the found record (valid only during the call). */
struct m0_btree_cb {
	int (*c_act)(struct m0_btree_cb *cb, struct m0_btree_rec *rec);
	void *c_datum;
};

/** Asynchronous operation state in Motr; unused (may be NULL) here. */
struct m0_btree_op {
	int bo_rc;
};

enum m0_btree_opflag {
	BOF_EQUAL = 1 << 0,
	BOF_INSERT_IF_NOT_FOUND = 1 << 1,
};

struct m0_btree {
	struct m0_be_seg *t_seg;
	uint64_t t_nr_get;
	uint64_t t_nr_put;
	uint64_t t_nr_del;
};

/** Node header at the start of every node page.  bh_slot[i] is the offset
 * of record i (records in key order); a record is u16 key length, u16 value
 * length, key, value.  Internal nodes: values are 4-byte child pages;
 * record i's child holds keys >= its key, bh_left keys below record 0. */
struct bnode_head {
	uint32_t bh_magic;
	uint32_t bh_pgno;
	uint16_t bh_level;      /* 0: leaf */
	uint16_t bh_used;       /* records */
	uint32_t bh_left;       /* internal nodes: leftmost child page */
	uint32_t bh_heap;       /* lowest record offset */
	uint32_t bh_pad;
	uint64_t bh_lsn;        /* transaction that last wrote the node */
	uint16_t bh_slot[];
};

#define BNODE_MAGIC 0x444f4e42U /* "BNOD" */

/** Node descriptor. */
struct nd {
	struct bnode_head *n_head;
	uint32_t n_pgno;
	struct m0_btree *n_tree;
};

/** Position in a node: bnode_find() sets s_idx and, when found, s_rec. */
struct slot {
	const struct nd *s_node;
	int s_idx;
	struct m0_btree_rec s_rec;
};

int m0_be_seg_open(struct m0_be_seg *seg, const char *dir, uint32_t *devices,
		   bool sync, char *err, size_t errlen);
void m0_be_seg_close(struct m0_be_seg *seg);
const struct be_sb *m0_be_seg_sb(const struct m0_be_seg *seg);

void m0_be_tx_open(struct m0_be_tx *tx, struct m0_be_seg *seg);
int m0_be_tx_close(struct m0_be_tx *tx);   /* commit */
void m0_be_tx_abort(struct m0_be_tx *tx);

void m0_btree_open(struct m0_btree *arbor, struct m0_be_seg *seg);
int m0_btree_get(struct m0_btree *arbor, const struct m0_btree_key *key,
		 struct m0_btree_cb *cb, uint64_t flags, struct m0_btree_op *op);
int m0_btree_put(struct m0_btree *arbor, const struct m0_btree_rec *rec,
		 struct m0_btree_cb *cb, struct m0_btree_op *op,
		 struct m0_be_tx *tx);
int m0_btree_update(struct m0_btree *arbor, const struct m0_btree_rec *rec,
		    struct m0_btree_cb *cb, uint64_t flags,
		    struct m0_btree_op *op, struct m0_be_tx *tx);
int m0_btree_del(struct m0_btree *arbor, const struct m0_btree_key *key,
		 struct m0_btree_cb *cb, struct m0_btree_op *op,
		 struct m0_be_tx *tx);
/** Calls cb for every record with key >= @key in order, until c_act returns
 * non-zero (which is returned). */
int m0_btree_iter(struct m0_btree *arbor, const struct m0_btree_key *key,
		  struct m0_btree_cb *cb, uint64_t flags, struct m0_btree_op *op);
bool bnode_find(struct slot *slot, struct m0_btree_key *find_key);
/** JSON of the node whose cached page contains addr (compared with the
 * tree's node pages, never dereferenced): 0, -ENOENT or -EIO. */
int m0_btree_node_json(struct m0_btree *arbor, uint64_t addr,
		       struct m0sim_sbuf *sb);
/** Address of the root node's cached page. */
uintptr_t m0_btree_root_addr(struct m0_btree *arbor);

#endif /* M0SIM_BE_H */
