/* store.h - object storage: devices (stobs), block allocators, cobs and the
 * object operations of the io/md services. */
#ifndef M0SIM_STORE_H
#define M0SIM_STORE_H

#include "be.h"

#include <limits.h>
#include <pthread.h>

enum {
	M0SIM_BLOCK_SHIFT = 12,
	M0SIM_BLOCK_SIZE = 1 << M0SIM_BLOCK_SHIFT,
	M0SIM_DEV_MAX = 16,             /* data devices; +1 parity */
	M0SIM_NAME_MAX = 200,
	M0SIM_OBJ_MAX = 1 << 20,        /* object size limit */
	M0SIM_COB_BLOCKS_MAX = M0SIM_OBJ_MAX / M0SIM_BLOCK_SIZE,
	M0SIM_EXT_MAX = 4,              /* extents per cob */
	M0SIM_OBJ_LOCKS = 64,
};

/* ------------------------------------------------------- storage objects */

struct m0_stob_id {
	struct m0_fid si_domain_fid;
	struct m0_fid si_fid;
};

struct m0_ad_balloc;

/** A storage object.  The store's device stobs are the files dev<N>; each
 * cob has its own stob on its device (Motr's AD stob: si_fid is the cob
 * fid, writes get their blocks from the device's allocator). */
struct m0_stob {
	struct m0_stob_id so_id;
	uint32_t so_dev;
	int so_fd;
	const char *so_path;
	struct m0_ad_balloc *so_ballroom;  /* m0sim: NULL on device stobs */
};

enum m0_stob_io_opcode { SIO_INVALID, SIO_READ, SIO_WRITE };
enum m0_stob_io_state { SIS_IDLE, SIS_BUSY };

/** One synchronous block io: si_user bytes at block si_offset. */
struct m0_stob_io {
	enum m0_stob_io_opcode si_opcode;
	struct m0_stob *si_stob;
	int32_t si_rc;
	m0_bcount_t si_count;       /* bytes transferred */
	enum m0_stob_io_state si_state;
	struct m0_buf si_user;
	m0_bindex_t si_offset;      /* in blocks; M0SIM_OFFSET_ALLOC: allocate */
	struct m0_ext si_ext;       /* m0sim: the blocks an allocating write got */
};

/** si_offset of a write to new blocks, allocated by the io itself (as
 * Motr's AD stob does in ad_write_prepare, inside the io launch). */
#define M0SIM_OFFSET_ALLOC UINT64_MAX

int m0_stob_io_prepare_and_launch(struct m0_stob_io *io, struct m0_stob *obj,
				  struct m0_be_tx *tx, void *scope);

/* ------------------------------------------------------- block allocator */

/** Allocation zones (Motr's balloc zones; m0sim has one kind of space). */
enum { M0_BALLOC_SPARE_ZONE = 1 << 0, M0_BALLOC_NORMAL_ZONE = 1 << 1 };

/** Block allocator of one device: a bitmap of used blocks.  It is not
 * persisted; opening the store rebuilds it from the cob extent maps, which
 * are the durable truth (so a crash never leaks or double-allocates). */
struct m0_ad_balloc {
	uint32_t bb_dev;
	uint64_t bb_nblocks;    /* device size in blocks (bitmap length) */
	uint64_t bb_cap;        /* bitmap capacity in blocks */
	uint64_t bb_used;
	uint8_t *bb_map;
	pthread_mutex_t bb_lock;
	uint64_t bb_nr_alloc;
	uint64_t bb_nr_free;
};

#ifndef M0SIM_INLINE_BALLOC
int balloc_alloc(struct m0_ad_balloc *ballroom, struct m0_be_tx *tx,
		 m0_bcount_t count, struct m0_ext *out, uint64_t zone);
#endif
int balloc_free(struct m0_ad_balloc *ballroom, struct m0_be_tx *tx,
		struct m0_ext *ext);

/* ------------------------------------------------------------------ cobs */

struct m0_cob_domain {
	uint64_t cd_id;
	struct m0_btree *cd_tree;
	struct m0_stob *cd_stobs;   /* m0sim: device of cob with device id i */
	uint32_t cd_nr_stobs;
	struct m0_ad_balloc *cd_ballrooms;  /* m0sim: allocator of device i */
};

struct m0_bitstring {
	uint32_t b_len;
	char b_data[32];
};

/** Namespace key: parent (the global object) and a name ("dev<N>"). */
struct m0_cob_nskey {
	struct m0_fid cnk_pfid;
	struct m0_bitstring cnk_name;
};

/** Object index key: the cob fid. */
struct m0_cob_oikey {
	struct m0_fid cok_fid;
	uint32_t cok_linkno;
};

/** Namespace record. */
struct m0_cob_nsrec {
	struct m0_fid cnr_fid;      /* cob fid */
	uint32_t cnr_linkno;
	uint32_t cnr_nlink;
	uint32_t cnr_cntr;
	char cnr_pad[4];
	uint64_t cnr_omgid;
	uint64_t cnr_size;          /* bytes stored in the cob */
	uint64_t cnr_blksize;
	uint64_t cnr_blocks;
	uint64_t cnr_atime;
	uint64_t cnr_mtime;
	uint64_t cnr_ctime;
};

/** Extent map of a cob: where its blocks are on the device, and a CRC-32
 * of every block.  Cob block j is at device block em_ext[..] in order. */
struct m0sim_emap {
	uint32_t em_nr_ext;
	uint32_t em_nr_blocks;
	struct m0_ext em_ext[M0SIM_EXT_MAX];
	uint32_t em_csum[M0SIM_COB_BLOCKS_MAX];
};

struct m0_cob {
	struct m0_cob_domain *co_dom;
	struct m0_stob *co_stob;
	struct m0_ref co_ref;
	uint64_t co_flags;
	struct m0_cob_nskey *co_nskey;
	struct m0_cob_oikey co_oikey;
	struct m0_cob_nsrec co_nsrec;
	/* m0sim */
	struct m0_stob co_stob_store;
	uint32_t co_device;
	struct m0_cob_nskey co_nskey_store;
	struct m0sim_emap co_emap;
};

enum m0_cob_flags { M0_CA_NSKEY = 1 << 0, M0_CA_NSREC = 1 << 1, M0_CA_FABREC = 1 << 2 };

int m0_cob_alloc(struct m0_cob_domain *dom, struct m0_cob **out);
void m0_cob_put(struct m0_cob *cob);
int m0_cob_create(struct m0_cob *cob, struct m0_cob_nskey *nskey,
		  struct m0_cob_nsrec *nsrec, void *fabrec, void *omgrec,
		  struct m0_be_tx *tx);
int m0_cob_update(struct m0_cob *cob, struct m0_cob_nsrec *nsrec,
		  void *fabrec, void *omgrec, struct m0_be_tx *tx);
int m0_cob_delete(struct m0_cob *cob, struct m0_be_tx *tx);
int m0_cob_lookup(struct m0_cob_domain *dom, struct m0_cob_nskey *nskey,
		  uint64_t flags, struct m0_cob **out);
int m0_cob_locate(struct m0_cob_domain *dom, struct m0_cob_oikey *oikey,
		  uint64_t flags, struct m0_cob **out);
void m0_cob_nskey_make(struct m0_cob_nskey *nskey, const struct m0_fid *pfid,
		       uint32_t device);

/* --------------------------------------------------------------- objects */

/** Object record: value of key 0x01 + name. */
struct m0sim_obj_rec {
	uint32_t or_magic;
	uint32_t or_devices;
	struct m0_uint128 or_id;
	struct m0_fid or_fid;
	uint64_t or_size;
	uint64_t or_version;
	uint32_t or_block_size;
	uint32_t or_pad;
};

struct m0sim_store {
	char st_dir[PATH_MAX];
	uint32_t st_ndev;                   /* data devices; dev st_ndev is parity */
	bool st_sync;
	struct m0_stob st_dev[M0SIM_DEV_MAX + 1];
	char st_dev_path[M0SIM_DEV_MAX + 1][PATH_MAX];
	struct m0_ad_balloc st_balloc[M0SIM_DEV_MAX + 1];
	struct m0_be_seg st_seg;
	struct m0_btree st_tree;
	struct m0_cob_domain st_cob_dom;
	pthread_mutex_t st_obj_locks[M0SIM_OBJ_LOCKS];
	uint64_t st_nr_objects;
	uint64_t st_nr_csum_errors;
	uint64_t st_nr_repairs;
	const char *st_server_ep;           /* for cob listings */
};

/** Opens (creating if needed) the store in dir.  *ndev: wanted data
 * devices; on return the count the store really has (fixed at creation). */
int m0sim_store_open(struct m0sim_store *st, const char *dir, uint32_t *ndev,
		     bool sync, char *err, size_t errlen);
void m0sim_store_close(struct m0sim_store *st);

/* Object operations: 0 or -errno with a message in msg. */
int m0sim_obj_create(struct m0sim_store *st, const char *name, size_t nlen,
		     char *msg, size_t msglen);
int m0sim_obj_write(struct m0sim_store *st, const char *name, size_t nlen,
		    const void *data, size_t len, char *msg, size_t msglen);
/** out->b_addr is m0_alloc()ed (NULL for an empty object). */
int m0sim_obj_read(struct m0sim_store *st, const char *name, size_t nlen,
		   struct m0_buf *out, char *msg, size_t msglen);
int m0sim_obj_delete(struct m0sim_store *st, const char *name, size_t nlen,
		     char *msg, size_t msglen);
int m0sim_obj_getattr_json(struct m0sim_store *st, const char *name,
			   size_t nlen, struct m0sim_sbuf *sb, char *msg,
			   size_t msglen);
int m0sim_obj_info_json(struct m0sim_store *st, const char *name, size_t nlen,
			struct m0sim_sbuf *sb, char *msg, size_t msglen);
/** Cobs of an object given its gob fid (or one of its cob fids). */
int m0sim_store_cob_list(struct m0sim_store *st, const struct m0_fid *fid,
			 struct m0sim_sbuf *sb);
int m0sim_store_block_repair(struct m0sim_store *st, const struct m0_fid *fid,
			     uint64_t block, char *msg, size_t msglen);
int m0sim_store_meta_update(struct m0sim_store *st, const char *key,
			    const char *value);
int m0sim_store_meta_get(struct m0sim_store *st, const char *key, char *value,
			 size_t len);
void m0sim_store_stats_json(struct m0sim_store *st, struct m0sim_sbuf *sb);

#endif /* M0SIM_STORE_H */
