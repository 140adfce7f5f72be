/* store.c - devices, block allocation, cobs and the object operations.
 *
 * An object of S bytes is cut into 4 KiB data blocks; data block L goes to
 * data device L % N as block L / N of the object's cob on that device
 * (stripe L / N).  Device N holds the XOR parity of each stripe.  Every cob
 * has the same number of blocks (the stripe count); the tail of the last
 * stripe is zero.  Metadata records in the B-tree (keys start with a type
 * byte):
 *   0x01 name                   -> struct m0sim_obj_rec
 *   0x02 gob fid(BE) "dev<N>"   -> struct m0_cob_nsrec      (namespace)
 *   0x03 cob fid(BE)            -> nskey (pfid, name)       (object index)
 *   0x04 cob fid(BE)            -> extent map with block CRC-32s
 * Other keys (starting with a printable byte) are free-form records written
 * by m0sim_meta_update(). */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_IOSERVICE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { KEY_OBJ = 0x01, KEY_NS = 0x02, KEY_OI = 0x03, KEY_EMAP = 0x04 };
#define OBJ_REC_MAGIC 0x4f424a31U /* "OBJ1" */

static int fail(char *msg, size_t len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t len, int rc, const char *fmt, ...)
{
	va_list ap;

	if (msg != NULL && len > 0) {
		va_start(ap, fmt);
		vsnprintf(msg, len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static uint64_t wall_now(void)
{
	return (uint64_t)time(NULL);
}

/* ------------------------------------------------------------- keys */

static void fid_be(uint8_t *p, const struct m0_fid *f)
{
	int i;

	for (i = 0; i < 8; i++) {
		p[i] = (uint8_t)(f->f_container >> (56 - 8 * i));
		p[8 + i] = (uint8_t)(f->f_key >> (56 - 8 * i));
	}
}

static void fid_from_be(const uint8_t *p, struct m0_fid *f)
{
	int i;

	f->f_container = f->f_key = 0;
	for (i = 0; i < 8; i++) {
		f->f_container = (f->f_container << 8) | p[i];
		f->f_key = (f->f_key << 8) | p[8 + i];
	}
}

struct mkey {
	uint8_t mk_buf[1 + M0SIM_NAME_MAX + 32];
	struct m0_btree_key mk_key;
};

static struct m0_btree_key *key_obj(struct mkey *k, const char *name, size_t nlen)
{
	k->mk_buf[0] = KEY_OBJ;
	memcpy(k->mk_buf + 1, name, nlen);
	k->mk_key.k_data = (struct m0_buf){ 1 + nlen, k->mk_buf };
	return &k->mk_key;
}

static struct m0_btree_key *key_ns(struct mkey *k, const struct m0_cob_nskey *nskey)
{
	size_t n = M0_MIN(nskey->cnk_name.b_len, sizeof nskey->cnk_name.b_data);

	k->mk_buf[0] = KEY_NS;
	fid_be(k->mk_buf + 1, &nskey->cnk_pfid);
	memcpy(k->mk_buf + 17, nskey->cnk_name.b_data, n);
	k->mk_key.k_data = (struct m0_buf){ 17 + n, k->mk_buf };
	return &k->mk_key;
}

static struct m0_btree_key *key_fid(struct mkey *k, uint8_t type,
				    const struct m0_fid *fid)
{
	k->mk_buf[0] = type;
	fid_be(k->mk_buf + 1, fid);
	k->mk_key.k_data = (struct m0_buf){ 17, k->mk_buf };
	return &k->mk_key;
}

/* ------------------------------------------------------ tree helpers */

struct copy_ctx {
	void *cc_buf;
	size_t cc_cap;
	size_t cc_len;
};

static int copy_act(struct m0_btree_cb *cb, struct m0_btree_rec *rec)
{
	struct copy_ctx *c = cb->c_datum;

	c->cc_len = rec->r_val.b_nob;
	memcpy(c->cc_buf, rec->r_val.b_addr, M0_MIN(c->cc_cap, c->cc_len));
	return 0;
}

/* Copies the value of key into buf; *len gets its full length. */
static int tree_get(struct m0_btree *t, const struct m0_btree_key *key,
		    void *buf, size_t cap, size_t *len)
{
	struct copy_ctx c = { buf, cap, 0 };
	struct m0_btree_cb cb = { copy_act, &c };
	int rc = m0_btree_get(t, key, &cb, BOF_EQUAL, NULL);

	if (len != NULL)
		*len = c.cc_len;
	return rc;
}

static int tree_put(struct m0_btree *t, struct m0_be_tx *tx,
		    const struct m0_btree_key *key, const void *val, size_t vlen,
		    bool update)
{
	struct m0_btree_rec rec = { .r_key = *key,
				    .r_val = { vlen, (void *)val } };

	return update ? m0_btree_update(t, &rec, NULL, 0, NULL, tx) :
		m0_btree_put(t, &rec, NULL, NULL, tx);
}

/* ---------------------------------------------------------- extent maps */

static size_t emap_encode(const struct m0sim_emap *em, uint8_t *out)
{
	size_t o = 0;

	memcpy(out, &em->em_nr_ext, 4);
	memcpy(out + 4, &em->em_nr_blocks, 4);
	o = 8;
	memcpy(out + o, em->em_ext, em->em_nr_ext * sizeof em->em_ext[0]);
	o += em->em_nr_ext * sizeof em->em_ext[0];
	memcpy(out + o, em->em_csum, em->em_nr_blocks * sizeof em->em_csum[0]);
	o += em->em_nr_blocks * sizeof em->em_csum[0];
	return o;
}

static int emap_decode(const uint8_t *v, size_t len, struct m0sim_emap *em)
{
	if (len < 8)
		return -EIO;
	memset(em, 0, sizeof *em);
	memcpy(&em->em_nr_ext, v, 4);
	memcpy(&em->em_nr_blocks, v + 4, 4);
	if (em->em_nr_ext > M0SIM_EXT_MAX ||
	    em->em_nr_blocks > M0SIM_COB_BLOCKS_MAX ||
	    len != 8 + em->em_nr_ext * sizeof em->em_ext[0] +
	    em->em_nr_blocks * sizeof em->em_csum[0])
		return -EIO;
	memcpy(em->em_ext, v + 8, em->em_nr_ext * sizeof em->em_ext[0]);
	memcpy(em->em_csum, v + 8 + em->em_nr_ext * sizeof em->em_ext[0],
	       em->em_nr_blocks * sizeof em->em_csum[0]);
	return 0;
}

/* Device block of cob block j, or -ERANGE. */
static int emap_block(const struct m0sim_emap *em, uint64_t j, uint64_t *dev_block)
{
	uint32_t e;

	for (e = 0; e < em->em_nr_ext; e++) {
		uint64_t n = em->em_ext[e].e_end - em->em_ext[e].e_start;

		if (j < n) {
			*dev_block = em->em_ext[e].e_start + j;
			return 0;
		}
		j -= n;
	}
	return -ERANGE;
}

/* ------------------------------------------------------------ stob io */

static int pio_full(int fd, bool write, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write ?
			pwrite(fd, (char *)buf + done, len - done, off + (off_t)done) :
			pread(fd, (char *)buf + done, len - done, off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;   /* read past the end of the device */
		done += (size_t)n;
	}
	return 0;
}

static int ad_write_prepare(struct m0_stob_io *io, struct m0_stob *obj,
			    struct m0_be_tx *tx);

/** Reads or writes si_user at block si_offset of the stob's device,
 * synchronously; a write at M0SIM_OFFSET_ALLOC first allocates its blocks
 * (si_ext) on this thread, as Motr's AD stob does. */
M0_PROBE int m0_stob_io_prepare_and_launch(struct m0_stob_io *io,
					   struct m0_stob *obj,
					   struct m0_be_tx *tx, void *scope)
{
	m0_time_t t0 = m0_time_now();
	uint64_t v[4];

	(void)scope;
	io->si_stob = obj;
	io->si_state = SIS_BUSY;
	io->si_ext = (struct m0_ext){ 0, 0 };
	io->si_rc = 0;
	if (io->si_opcode == SIO_WRITE && io->si_offset == M0SIM_OFFSET_ALLOC)
		io->si_rc = ad_write_prepare(io, obj, tx);
	if (io->si_rc == 0)
		io->si_rc = pio_full(obj->so_fd, io->si_opcode == SIO_WRITE,
				     io->si_user.b_addr, io->si_user.b_nob,
				     (off_t)(io->si_offset << M0SIM_BLOCK_SHIFT));
	io->si_count = io->si_rc == 0 ? io->si_user.b_nob : 0;
	io->si_state = SIS_IDLE;
	v[0] = obj->so_dev;
	v[1] = io->si_opcode;
	v[2] = io->si_count;
	v[3] = m0_time_now() - t0;
	m0_addb2_add(M0_AVI_STOB_IO, 4, v);
	return io->si_rc;
}

static int stob_rw(struct m0_stob *stob, enum m0_stob_io_opcode op, void *buf,
		   uint64_t nblocks, uint64_t dev_block)
{
	struct m0_stob_io io = {
		.si_opcode = op,
		.si_user = { nblocks << M0SIM_BLOCK_SHIFT, buf },
		.si_offset = dev_block,
	};

	return m0_stob_io_prepare_and_launch(&io, stob, NULL, NULL);
}

/** Writes nblocks to new blocks of the stob, which it allocates: *ext
 * (e_end 0 when nothing was allocated). */
static int stob_write_new(struct m0_stob *stob, void *buf, uint64_t nblocks,
			  struct m0_ext *ext)
{
	struct m0_stob_io io = {
		.si_opcode = SIO_WRITE,
		.si_user = { nblocks << M0SIM_BLOCK_SHIFT, buf },
		.si_offset = M0SIM_OFFSET_ALLOC,
	};
	int rc;

	if (stob == NULL) {
		*ext = (struct m0_ext){ 0, 0 };
		return -ENODEV;
	}
	rc = m0_stob_io_prepare_and_launch(&io, stob, NULL, NULL);
	*ext = io.si_ext;
	return rc;
}

/* ---------------------------------------------------- block allocator */

static bool bit_get(const struct m0_ad_balloc *b, uint64_t i)
{
	return (b->bb_map[i / 8] >> (i % 8)) & 1;
}

static void bits_set(struct m0_ad_balloc *b, uint64_t from, uint64_t to, bool on)
{
	uint64_t i;

	for (i = from; i < to; i++) {
		if (on)
			b->bb_map[i / 8] |= (uint8_t)(1u << (i % 8));
		else
			b->bb_map[i / 8] &= (uint8_t)~(1u << (i % 8));
	}
}

/* Makes the device nblocks long (never shrinks). */
static int balloc_grow(struct m0_ad_balloc *b, uint64_t nblocks)
{
	if (nblocks > b->bb_cap) {
		uint64_t cap = b->bb_cap ? b->bb_cap : 1024;
		uint8_t *map;

		while (cap < nblocks)
			cap *= 2;
		map = realloc(b->bb_map, cap / 8);
		if (map == NULL)
			return -ENOMEM;
		memset(map + b->bb_cap / 8, 0, (cap - b->bb_cap) / 8);
		b->bb_map = map;
		b->bb_cap = cap;
	}
	if (nblocks > b->bb_nblocks)
		b->bb_nblocks = nblocks;
	return 0;
}

#ifdef M0SIM_INLINE_BALLOC
#define M0SIM_BALLOC_FN static inline __attribute__((always_inline))
#else
#define M0SIM_BALLOC_FN M0_PROBE
#endif

/** Allocates count contiguous blocks (first fit; the device grows when no
 * free run is long enough).  tx is unused: the allocator state is rebuilt
 * from the committed extent maps at start. */
M0SIM_BALLOC_FN int balloc_alloc(struct m0_ad_balloc *ballroom,
				 struct m0_be_tx *tx, m0_bcount_t count,
				 struct m0_ext *out, uint64_t zone)
{
	uint64_t i, start = 0, run = 0;
	bool found = false;
	int rc = 0;

	(void)tx;
	(void)zone;
	if (count == 0)
		return -EINVAL;
	pthread_mutex_lock(&ballroom->bb_lock);
	for (i = 0; i < ballroom->bb_nblocks; i++) {
		if (bit_get(ballroom, i)) {
			run = 0;
			continue;
		}
		if (run++ == 0)
			start = i;
		if (run == count) {
			found = true;
			break;
		}
	}
	if (!found) {
		/* Extend the trailing free run (if any) past the end. */
		if (run == 0)
			start = ballroom->bb_nblocks;
		rc = balloc_grow(ballroom, start + count);
	}
	if (rc == 0) {
		bits_set(ballroom, start, start + count, true);
		ballroom->bb_used += count;
		ballroom->bb_nr_alloc++;
		out->e_start = start;
		out->e_end = start + count;
	}
	pthread_mutex_unlock(&ballroom->bb_lock);
	if (rc == 0)
		M0_LOG(M0_DEBUG, "dev %u: allocated [%" PRIu64 ", %" PRIu64 ")",
		       ballroom->bb_dev, out->e_start, out->e_end);
	return rc;
}

/** The blocks of an allocating write, from the stob's device allocator. */
static int ad_write_prepare(struct m0_stob_io *io, struct m0_stob *obj,
			    struct m0_be_tx *tx)
{
	m0_bcount_t count = io->si_user.b_nob >> M0SIM_BLOCK_SHIFT;
	int rc;

	if (obj->so_ballroom == NULL)
		return -EINVAL;
	rc = balloc_alloc(obj->so_ballroom, tx, count, &io->si_ext,
			  M0_BALLOC_NORMAL_ZONE);
	if (rc == 0)
		io->si_offset = io->si_ext.e_start;
	return rc;
}

/** Frees an extent; -EINVAL if some block of it is not allocated. */
M0_PROBE int balloc_free(struct m0_ad_balloc *ballroom, struct m0_be_tx *tx,
			 struct m0_ext *ext)
{
	uint64_t i;
	int rc = 0;

	(void)tx;
	pthread_mutex_lock(&ballroom->bb_lock);
	if (ext->e_end > ballroom->bb_nblocks || ext->e_start >= ext->e_end) {
		rc = -EINVAL;
	} else {
		for (i = ext->e_start; i < ext->e_end; i++) {
			if (!bit_get(ballroom, i))
				rc = -EINVAL;
		}
	}
	if (rc == 0) {
		bits_set(ballroom, ext->e_start, ext->e_end, false);
		ballroom->bb_used -= ext->e_end - ext->e_start;
		ballroom->bb_nr_free++;
	}
	pthread_mutex_unlock(&ballroom->bb_lock);
	if (rc != 0)
		M0_LOG(M0_ERROR, "dev %u: bad free [%" PRIu64 ", %" PRIu64 ")",
		       ballroom->bb_dev, ext->e_start, ext->e_end);
	return rc;
}

/* Marks an extent found in metadata as used (store open). */
static void balloc_reserve(struct m0_ad_balloc *b, const struct m0_ext *ext)
{
	uint64_t i;

	pthread_mutex_lock(&b->bb_lock);
	if (balloc_grow(b, ext->e_end) == 0) {
		for (i = ext->e_start; i < ext->e_end; i++) {
			if (bit_get(b, i))
				fprintf(stderr, "m0d: dev %u block %" PRIu64
					" is in two extents\n", b->bb_dev, i);
			else
				b->bb_used++;
		}
		bits_set(b, ext->e_start, ext->e_end, true);
	}
	pthread_mutex_unlock(&b->bb_lock);
}

/* ---------------------------------------------------------------- cobs */

void m0_cob_nskey_make(struct m0_cob_nskey *nskey, const struct m0_fid *pfid,
		       uint32_t device)
{
	memset(nskey, 0, sizeof *nskey);
	nskey->cnk_pfid = *pfid;
	nskey->cnk_name.b_len = (uint32_t)snprintf(nskey->cnk_name.b_data,
						   sizeof nskey->cnk_name.b_data,
						   "dev%u", device);
}

int m0_cob_alloc(struct m0_cob_domain *dom, struct m0_cob **out)
{
	struct m0_cob *cob = m0_alloc(sizeof *cob);

	if (cob == NULL)
		return -ENOMEM;
	cob->co_dom = dom;
	cob->co_ref.ref_cnt = 1;
	cob->co_nskey = &cob->co_nskey_store;
	*out = cob;
	return 0;
}

void m0_cob_put(struct m0_cob *cob)
{
	if (cob != NULL &&
	    __atomic_sub_fetch(&cob->co_ref.ref_cnt, 1, __ATOMIC_ACQ_REL) == 0)
		m0_free(cob);
}

static void cob_bind(struct m0_cob *cob)
{
	cob->co_oikey.cok_fid = cob->co_nsrec.cnr_fid;
	cob->co_oikey.cok_linkno = cob->co_nsrec.cnr_linkno;
	cob->co_device = m0_fid_cob_device_id(&cob->co_nsrec.cnr_fid);
	cob->co_stob = NULL;
	if (cob->co_device < cob->co_dom->cd_nr_stobs) {
		const struct m0_stob *dev = &cob->co_dom->cd_stobs[cob->co_device];

		cob->co_stob_store = (struct m0_stob){
			.so_id = { .si_domain_fid = dev->so_id.si_fid,
				   .si_fid = cob->co_nsrec.cnr_fid },
			.so_dev = dev->so_dev,
			.so_fd = dev->so_fd,
			.so_path = dev->so_path,
			.so_ballroom = cob->co_dom->cd_ballrooms != NULL ?
				&cob->co_dom->cd_ballrooms[cob->co_device] : NULL,
		};
		cob->co_stob = &cob->co_stob_store;
	}
}

static size_t nskey_encode(const struct m0_cob_nskey *nskey, uint8_t *out)
{
	size_t n = M0_MIN(nskey->cnk_name.b_len, sizeof nskey->cnk_name.b_data);

	fid_be(out, &nskey->cnk_pfid);
	memcpy(out + 16, nskey->cnk_name.b_data, n);
	return 16 + n;
}

/** Creates a cob: namespace, object index and extent map (fabrec, a
 * struct m0sim_emap) records, in tx.  omgrec is unused. */
M0_PROBE int m0_cob_create(struct m0_cob *cob, struct m0_cob_nskey *nskey,
			   struct m0_cob_nsrec *nsrec, void *fabrec,
			   void *omgrec, struct m0_be_tx *tx)
{
	struct m0_btree *t = cob->co_dom->cd_tree;
	uint8_t val[sizeof(struct m0sim_emap)];
	struct mkey k;
	size_t n;
	int rc;

	(void)omgrec;
	cob->co_nskey_store = *nskey;
	cob->co_nsrec = *nsrec;
	if (fabrec != NULL)
		cob->co_emap = *(const struct m0sim_emap *)fabrec;
	else
		memset(&cob->co_emap, 0, sizeof cob->co_emap);
	cob_bind(cob);

	rc = tree_put(t, tx, key_ns(&k, nskey), nsrec, sizeof *nsrec, false);
	if (rc == 0) {
		n = nskey_encode(nskey, val);
		rc = tree_put(t, tx, key_fid(&k, KEY_OI, &nsrec->cnr_fid), val, n,
			      false);
	}
	if (rc == 0) {
		n = emap_encode(&cob->co_emap, val);
		rc = tree_put(t, tx, key_fid(&k, KEY_EMAP, &nsrec->cnr_fid), val,
			      n, false);
	}
	M0_LOG(M0_DEBUG, "cob " FID_F " create: %d", FID_P(&nsrec->cnr_fid), rc);
	return rc;
}

/** Updates the namespace record and/or the extent map of a cob. */
M0_PROBE int m0_cob_update(struct m0_cob *cob, struct m0_cob_nsrec *nsrec,
			   void *fabrec, void *omgrec, struct m0_be_tx *tx)
{
	struct m0_btree *t = cob->co_dom->cd_tree;
	uint8_t val[sizeof(struct m0sim_emap)];
	struct mkey k;
	int rc = 0;

	(void)omgrec;
	if (nsrec != NULL) {
		cob->co_nsrec = *nsrec;
		rc = tree_put(t, tx, key_ns(&k, cob->co_nskey), nsrec,
			      sizeof *nsrec, true);
	}
	if (rc == 0 && fabrec != NULL) {
		cob->co_emap = *(const struct m0sim_emap *)fabrec;
		rc = tree_put(t, tx, key_fid(&k, KEY_EMAP, &cob->co_oikey.cok_fid),
			      val, emap_encode(&cob->co_emap, val), true);
	}
	return rc;
}

M0_PROBE int m0_cob_delete(struct m0_cob *cob, struct m0_be_tx *tx)
{
	struct m0_btree *t = cob->co_dom->cd_tree;
	struct mkey k;
	int rc;

	rc = m0_btree_del(t, key_ns(&k, cob->co_nskey), NULL, NULL, tx);
	if (rc == 0)
		rc = m0_btree_del(t, key_fid(&k, KEY_OI, &cob->co_oikey.cok_fid),
				  NULL, NULL, tx);
	if (rc == 0)
		rc = m0_btree_del(t, key_fid(&k, KEY_EMAP, &cob->co_oikey.cok_fid),
				  NULL, NULL, tx);
	M0_LOG(M0_DEBUG, "cob " FID_F " delete: %d", FID_P(&cob->co_oikey.cok_fid), rc);
	return rc;
}

/** Finds a cob by namespace key; *out is a new reference (m0_cob_put). */
M0_PROBE int m0_cob_lookup(struct m0_cob_domain *dom, struct m0_cob_nskey *nskey,
			   uint64_t flags, struct m0_cob **out)
{
	uint8_t val[sizeof(struct m0sim_emap)];
	struct m0_cob *cob;
	struct mkey k;
	size_t len;
	int rc;

	(void)flags;
	*out = NULL;
	rc = m0_cob_alloc(dom, &cob);
	if (rc != 0)
		return rc;
	cob->co_nskey_store = *nskey;
	rc = tree_get(dom->cd_tree, key_ns(&k, nskey), &cob->co_nsrec,
		      sizeof cob->co_nsrec, &len);
	if (rc == 0 && len != sizeof cob->co_nsrec)
		rc = -EIO;
	if (rc == 0) {
		cob_bind(cob);
		rc = tree_get(dom->cd_tree,
			      key_fid(&k, KEY_EMAP, &cob->co_oikey.cok_fid),
			      val, sizeof val, &len);
		if (rc == 0)
			rc = len <= sizeof val ? emap_decode(val, len, &cob->co_emap) :
				-EIO;
		else if (rc == -ENOENT)
			rc = -EIO;   /* namespace without extent map */
	}
	if (rc != 0) {
		m0_cob_put(cob);
		return rc;
	}
	*out = cob;
	return 0;
}

/** Finds a cob by its fid (object index). */
M0_PROBE int m0_cob_locate(struct m0_cob_domain *dom, struct m0_cob_oikey *oikey,
			   uint64_t flags, struct m0_cob **out)
{
	uint8_t val[16 + sizeof(((struct m0_bitstring *)0)->b_data)];
	struct m0_cob_nskey nskey;
	struct mkey k;
	size_t len;
	int rc;

	*out = NULL;
	rc = tree_get(dom->cd_tree, key_fid(&k, KEY_OI, &oikey->cok_fid), val,
		      sizeof val, &len);
	if (rc != 0)
		return rc;
	if (len < 16 || len > sizeof val)
		return -EIO;
	memset(&nskey, 0, sizeof nskey);
	fid_from_be(val, &nskey.cnk_pfid);
	nskey.cnk_name.b_len = (uint32_t)(len - 16);
	memcpy(nskey.cnk_name.b_data, val + 16, len - 16);
	return m0_cob_lookup(dom, &nskey, flags, out);
}

/* ------------------------------------------------------------- objects */

static int name_check(const char *name, size_t nlen, char *msg, size_t msglen)
{
	if (nlen == 0 || nlen > M0SIM_NAME_MAX || memchr(name, 0, nlen) != NULL)
		return fail(msg, msglen, -EINVAL,
			    "bad object name (1..%d bytes, no NUL)", M0SIM_NAME_MAX);
	return 0;
}

static pthread_mutex_t *obj_lock(struct m0sim_store *st, const struct m0_fid *gob)
{
	uint64_t h = gob->f_key ^ (gob->f_key >> 32) ^ gob->f_container;

	return &st->st_obj_locks[h % M0SIM_OBJ_LOCKS];
}

static int obj_get(struct m0sim_store *st, const char *name, size_t nlen,
		   struct m0sim_obj_rec *orec)
{
	struct mkey k;
	size_t len;
	int rc;

	rc = tree_get(&st->st_tree, key_obj(&k, name, nlen), orec, sizeof *orec,
		      &len);
	if (rc == 0 && (len != sizeof *orec || orec->or_magic != OBJ_REC_MAGIC))
		rc = -EIO;
	return rc;
}

static void cobs_put(struct m0_cob **cobs, uint32_t n)
{
	uint32_t d;

	for (d = 0; d < n; d++) {
		m0_cob_put(cobs[d]);
		cobs[d] = NULL;
	}
}

/* Looks up the N+1 cobs of an object. */
static int cobs_load(struct m0sim_store *st, const struct m0_fid *gob,
		     struct m0_cob **cobs, char *msg, size_t msglen)
{
	struct m0_cob_nskey nskey;
	uint32_t d;
	int rc;

	for (d = 0; d <= st->st_ndev; d++) {
		m0_cob_nskey_make(&nskey, gob, d);
		rc = m0_cob_lookup(&st->st_cob_dom, &nskey, M0_CA_NSREC | M0_CA_FABREC,
				   &cobs[d]);
		if (rc != 0) {
			cobs_put(cobs, d);
			return fail(msg, msglen, rc, "object " FID_F ": cob on device %u: %s",
				    FID_P(gob), d, strerror(-rc));
		}
	}
	return 0;
}

/* Reads all blocks of a cob into buf. */
static int cob_read(struct m0_cob *cob, uint8_t *buf)
{
	const struct m0sim_emap *em = &cob->co_emap;
	uint32_t e;
	int rc;

	for (e = 0; e < em->em_nr_ext; e++) {
		uint64_t n = em->em_ext[e].e_end - em->em_ext[e].e_start;

		rc = stob_rw(cob->co_stob, SIO_READ, buf, n, em->em_ext[e].e_start);
		if (rc != 0)
			return rc;
		buf += n << M0SIM_BLOCK_SHIFT;
	}
	return 0;
}

static void xor_into(uint8_t *dst, const uint8_t *src)
{
	size_t i;

	for (i = 0; i < M0SIM_BLOCK_SIZE; i++)
		dst[i] ^= src[i];
}

M0_INTERNAL int m0sim_obj_create(struct m0sim_store *st, const char *name,
				 size_t nlen, char *msg, size_t msglen)
{
	struct m0sim_obj_rec orec;
	struct m0sim_emap *em;
	struct m0_cob_nskey nskey;
	struct m0_cob_nsrec nsrec;
	struct m0_cob *cob;
	struct m0_be_tx tx;
	struct mkey k;
	pthread_mutex_t *lock;
	uint32_t d;
	int rc;

	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	memset(&orec, 0, sizeof orec);
	m0sim_name_to_id(name, nlen, &orec.or_id);
	m0_fid_gob_make(&orec.or_fid, (uint32_t)orec.or_id.u_hi, orec.or_id.u_lo);
	orec.or_magic = OBJ_REC_MAGIC;
	orec.or_devices = st->st_ndev;
	orec.or_version = 1;
	orec.or_block_size = M0SIM_BLOCK_SIZE;

	em = m0_alloc(sizeof *em);   /* empty extent map */
	if (em == NULL)
		return fail(msg, msglen, -ENOMEM, "out of memory");
	lock = obj_lock(st, &orec.or_fid);
	pthread_mutex_lock(lock);
	{
		struct m0sim_obj_rec old;

		rc = obj_get(st, name, nlen, &old);
		if (rc == 0) {
			rc = fail(msg, msglen, -EEXIST, "object %.*s exists",
				  (int)nlen, name);
			goto out;
		}
	}
	m0_cob_nskey_make(&nskey, &orec.or_fid, 0);
	if (m0_cob_lookup(&st->st_cob_dom, &nskey, 0, &cob) == 0) {
		m0_cob_put(cob);
		rc = fail(msg, msglen, -EEXIST,
			  "fid " FID_F " of %.*s is used by another object",
			  FID_P(&orec.or_fid), (int)nlen, name);
		goto out;
	}

	m0_be_tx_open(&tx, &st->st_seg);
	rc = tree_put(&st->st_tree, &tx, key_obj(&k, name, nlen), &orec,
		      sizeof orec, false);
	for (d = 0; rc == 0 && d <= st->st_ndev; d++) {
		rc = m0_cob_alloc(&st->st_cob_dom, &cob);
		if (rc != 0)
			break;
		m0_cob_nskey_make(&nskey, &orec.or_fid, d);
		memset(&nsrec, 0, sizeof nsrec);
		m0_fid_convert_gob2cob(&orec.or_fid, &nsrec.cnr_fid, d);
		nsrec.cnr_nlink = 1;
		nsrec.cnr_blksize = M0SIM_BLOCK_SIZE;
		nsrec.cnr_atime = nsrec.cnr_mtime = nsrec.cnr_ctime = wall_now();
		rc = m0_cob_create(cob, &nskey, &nsrec, em, NULL, &tx);
		m0_cob_put(cob);
	}
	if (rc != 0) {
		m0_be_tx_abort(&tx);
		rc = fail(msg, msglen, rc, "create %.*s: %s", (int)nlen, name,
			  strerror(-rc));
		goto out;
	}
	rc = m0_be_tx_close(&tx);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "create %.*s: commit: %s", (int)nlen,
			  name, strerror(-rc));
		goto out;
	}
	__atomic_add_fetch(&st->st_nr_objects, 1, __ATOMIC_RELAXED);
	M0_LOG(M0_INFO, "created object " FID_F, FID_P(&orec.or_fid));
out:
	pthread_mutex_unlock(lock);
	m0_free(em);
	return rc;
}

M0_INTERNAL int m0sim_obj_write(struct m0sim_store *st, const char *name,
				size_t nlen, const void *data, size_t len,
				char *msg, size_t msglen)
{
	const uint32_t N = st->st_ndev;
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	struct m0_ext ext[M0SIM_DEV_MAX + 1];
	struct m0sim_emap *old = NULL, *em = NULL;
	struct m0sim_obj_rec orec;
	struct m0_be_tx tx;
	struct m0_fid gob;
	struct mkey k;
	pthread_mutex_t *lock;
	uint8_t *buf = NULL;
	uint64_t nblocks, nstripes, cob_bytes, j;
	uint32_t d, nalloc = 0;
	int rc;

	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	if (len > M0SIM_OBJ_MAX)
		return fail(msg, msglen, -EFBIG, "object size %zu > limit %d", len,
			    M0SIM_OBJ_MAX);
	m0sim_name_to_fid(name, nlen, &gob);
	nblocks = (len + M0SIM_BLOCK_SIZE - 1) / M0SIM_BLOCK_SIZE;
	nstripes = (nblocks + N - 1) / N;
	cob_bytes = nstripes << M0SIM_BLOCK_SHIFT;

	old = m0_alloc((N + 1) * sizeof *old);
	em = m0_alloc((N + 1) * sizeof *em);
	if (old == NULL || em == NULL) {
		m0_free(old);
		m0_free(em);
		return fail(msg, msglen, -ENOMEM, "out of memory");
	}
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = obj_get(st, name, nlen, &orec);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "object %.*s: %s", (int)nlen, name,
			  rc == -ENOENT ? "no such object" : strerror(-rc));
		goto out;
	}
	rc = cobs_load(st, &gob, cobs, msg, msglen);
	if (rc != 0)
		goto out;

	/* Lay the data out as N data cobs plus the parity cob. */
	if (nstripes > 0) {
		buf = m0_alloc_aligned((N + 1) * cob_bytes, M0SIM_BLOCK_SHIFT);
		if (buf == NULL) {
			rc = fail(msg, msglen, -ENOMEM, "out of memory");
			goto out;
		}
	}
	for (j = 0; j < nstripes; j++) {
		uint8_t *parity = buf + N * cob_bytes + (j << M0SIM_BLOCK_SHIFT);

		for (d = 0; d < N; d++) {
			uint64_t off = (j * N + d) << M0SIM_BLOCK_SHIFT;
			uint8_t *blk = buf + d * cob_bytes + (j << M0SIM_BLOCK_SHIFT);

			if (off < len)
				memcpy(blk, (const uint8_t *)data + off,
				       M0_MIN((uint64_t)M0SIM_BLOCK_SIZE, len - off));
			xor_into(parity, blk);
		}
	}
	/* Allocate, checksum and write each cob's blocks. */
	for (d = 0; d <= N; d++) {
		uint8_t *cb;

		old[d] = cobs[d]->co_emap;
		memset(&em[d], 0, sizeof em[d]);
		if (nstripes == 0)
			continue;
		cb = buf + d * cob_bytes;
		/* The cob's stob allocates the blocks as it writes them. */
		rc = stob_write_new(cobs[d]->co_stob, cb, nstripes, &ext[d]);
		if (ext[d].e_end != 0)
			nalloc = d + 1;
		if (rc != 0) {
			rc = fail(msg, msglen, rc, "device %u: %s: %s", d,
				  ext[d].e_end == 0 ? "allocate" : "write",
				  rc == -ENOSPC ? "no space" : strerror(-rc));
			goto out;
		}
		em[d].em_nr_ext = 1;
		em[d].em_ext[0] = ext[d];
		em[d].em_nr_blocks = (uint32_t)nstripes;
		for (j = 0; j < nstripes; j++)
			em[d].em_csum[j] = m0sim_crc32(0, cb + (j << M0SIM_BLOCK_SHIFT),
						       M0SIM_BLOCK_SIZE);
	}
	/* Data must be on disk before metadata points at it. */
	for (d = 0; st->st_sync && nstripes > 0 && d <= N; d++) {
		if (fdatasync(st->st_dev[d].so_fd) != 0) {
			rc = fail(msg, msglen, -errno, "device %u: fdatasync: %s", d,
				  strerror(errno));
			goto out;
		}
	}

	m0_be_tx_open(&tx, &st->st_seg);
	orec.or_size = len;
	orec.or_version++;
	rc = tree_put(&st->st_tree, &tx, key_obj(&k, name, nlen), &orec,
		      sizeof orec, true);
	for (d = 0; rc == 0 && d <= N; d++) {
		struct m0_cob_nsrec nsrec = cobs[d]->co_nsrec;

		nsrec.cnr_size = cob_bytes;
		nsrec.cnr_blocks = nstripes;
		nsrec.cnr_mtime = nsrec.cnr_ctime = wall_now();
		rc = m0_cob_update(cobs[d], &nsrec, &em[d], NULL, &tx);
	}
	if (rc != 0) {
		m0_be_tx_abort(&tx);
		rc = fail(msg, msglen, rc, "write %.*s: metadata: %s", (int)nlen,
			  name, strerror(-rc));
		goto out;
	}
	rc = m0_be_tx_close(&tx);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "write %.*s: commit: %s", (int)nlen, name,
			  strerror(-rc));
		goto out;
	}
	/* Committed: the new blocks are in use, the old ones free. */
	nalloc = 0;
	for (d = 0; d <= N; d++) {
		uint32_t e;

		for (e = 0; e < old[d].em_nr_ext; e++)
			balloc_free(&st->st_balloc[d], NULL, &old[d].em_ext[e]);
	}
	M0_LOG(M0_INFO, "wrote object " FID_F " size %" PRIu64 " stripes %" PRIu64,
	       FID_P(&gob), (uint64_t)len, nstripes);
out:
	for (d = 0; d < nalloc; d++)
		balloc_free(&st->st_balloc[d], NULL, &ext[d]);
	pthread_mutex_unlock(lock);
	cobs_put(cobs, N + 1);
	if (buf != NULL)
		m0_free_aligned(buf, (N + 1) * cob_bytes, M0SIM_BLOCK_SHIFT);
	m0_free(old);
	m0_free(em);
	return rc;
}

M0_INTERNAL int m0sim_obj_read(struct m0sim_store *st, const char *name,
			       size_t nlen, struct m0_buf *out, char *msg,
			       size_t msglen)
{
	const uint32_t N = st->st_ndev;
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	struct m0sim_obj_rec orec;
	struct m0_fid gob;
	pthread_mutex_t *lock;
	uint8_t *buf = NULL, *data = NULL;
	uint64_t nblocks = 0, nstripes = 0, cob_bytes = 0, L;
	uint32_t d;
	int rc;

	*out = (struct m0_buf){ 0, NULL };
	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	m0sim_name_to_fid(name, nlen, &gob);
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = obj_get(st, name, nlen, &orec);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "object %.*s: %s", (int)nlen, name,
			  rc == -ENOENT ? "no such object" : strerror(-rc));
		goto out;
	}
	if (orec.or_size == 0)
		goto out;
	rc = cobs_load(st, &gob, cobs, msg, msglen);
	if (rc != 0)
		goto out;
	nblocks = (orec.or_size + M0SIM_BLOCK_SIZE - 1) / M0SIM_BLOCK_SIZE;
	nstripes = (nblocks + N - 1) / N;
	cob_bytes = nstripes << M0SIM_BLOCK_SHIFT;
	buf = m0_alloc_aligned(N * cob_bytes, M0SIM_BLOCK_SHIFT);
	data = m0_alloc_nz(orec.or_size);
	if (buf == NULL || data == NULL) {
		rc = fail(msg, msglen, -ENOMEM, "out of memory");
		goto out;
	}
	for (d = 0; d < N; d++) {
		if (cobs[d]->co_emap.em_nr_blocks != nstripes) {
			rc = fail(msg, msglen, -EIO,
				  "object " FID_F ": cob on device %u has %u blocks, "
				  "expected %" PRIu64, FID_P(&gob), d,
				  cobs[d]->co_emap.em_nr_blocks, nstripes);
			goto out;
		}
		rc = cob_read(cobs[d], buf + d * cob_bytes);
		if (rc != 0) {
			rc = fail(msg, msglen, rc, "device %u: read: %s", d,
				  strerror(-rc));
			goto out;
		}
	}
	/* Verify every data block, then gather them in object order. */
	for (L = 0; L < nblocks; L++) {
		uint64_t j = L / N, dev_block = 0;
		const uint8_t *blk;

		d = (uint32_t)(L % N);
		blk = buf + d * cob_bytes + (j << M0SIM_BLOCK_SHIFT);
		if (m0sim_crc32(0, blk, M0SIM_BLOCK_SIZE) !=
		    cobs[d]->co_emap.em_csum[j]) {
			emap_block(&cobs[d]->co_emap, j, &dev_block);
			__atomic_add_fetch(&st->st_nr_csum_errors, 1, __ATOMIC_RELAXED);
			rc = fail(msg, msglen, -EIO,
				  "checksum mismatch: object " FID_F " block %" PRIu64
				  " (cob " FID_F " on device %u, cob block %" PRIu64
				  ", device block %" PRIu64 ")",
				  FID_P(&gob), L, FID_P(&cobs[d]->co_oikey.cok_fid), d,
				  j, dev_block);
			M0_LOG(M0_ERROR, "checksum mismatch: object " FID_F
			       " block %" PRIu64, FID_P(&gob), L);
			goto out;
		}
		memcpy(data + (L << M0SIM_BLOCK_SHIFT), blk,
		       M0_MIN((uint64_t)M0SIM_BLOCK_SIZE,
			      orec.or_size - (L << M0SIM_BLOCK_SHIFT)));
	}
	*out = (struct m0_buf){ orec.or_size, data };
	data = NULL;
out:
	pthread_mutex_unlock(lock);
	cobs_put(cobs, N + 1);
	if (buf != NULL)
		m0_free_aligned(buf, N * cob_bytes, M0SIM_BLOCK_SHIFT);
	m0_free(data);
	return rc;
}

M0_INTERNAL int m0sim_obj_delete(struct m0sim_store *st, const char *name,
				 size_t nlen, char *msg, size_t msglen)
{
	const uint32_t N = st->st_ndev;
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	struct m0sim_obj_rec orec;
	struct m0_be_tx tx;
	struct m0_fid gob;
	struct mkey k;
	pthread_mutex_t *lock;
	uint32_t d, e;
	int rc;

	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	m0sim_name_to_fid(name, nlen, &gob);
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = obj_get(st, name, nlen, &orec);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "object %.*s: %s", (int)nlen, name,
			  rc == -ENOENT ? "no such object" : strerror(-rc));
		goto out;
	}
	rc = cobs_load(st, &gob, cobs, msg, msglen);
	if (rc != 0)
		goto out;
	m0_be_tx_open(&tx, &st->st_seg);
	rc = m0_btree_del(&st->st_tree, key_obj(&k, name, nlen), NULL, NULL, &tx);
	for (d = 0; rc == 0 && d <= N; d++)
		rc = m0_cob_delete(cobs[d], &tx);
	if (rc != 0) {
		m0_be_tx_abort(&tx);
		rc = fail(msg, msglen, rc, "delete %.*s: %s", (int)nlen, name,
			  strerror(-rc));
		goto out;
	}
	rc = m0_be_tx_close(&tx);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "delete %.*s: commit: %s", (int)nlen,
			  name, strerror(-rc));
		goto out;
	}
	for (d = 0; d <= N; d++) {
		for (e = 0; e < cobs[d]->co_emap.em_nr_ext; e++)
			balloc_free(&st->st_balloc[d], NULL, &cobs[d]->co_emap.em_ext[e]);
	}
	__atomic_sub_fetch(&st->st_nr_objects, 1, __ATOMIC_RELAXED);
	M0_LOG(M0_INFO, "deleted object " FID_F, FID_P(&gob));
out:
	pthread_mutex_unlock(lock);
	cobs_put(cobs, N + 1);
	return rc;
}

static void obj_json(struct m0sim_sbuf *sb, const char *name, size_t nlen,
		     const struct m0sim_obj_rec *orec)
{
	m0sim_sb_printf(sb, "\"name\":");
	m0sim_sb_json_str(sb, name, nlen);
	m0sim_sb_printf(sb, ",\"id\":\"%" PRIx64 ":%" PRIx64 "\",\"fid\":",
			orec->or_id.u_hi, orec->or_id.u_lo);
	m0sim_sb_fid(sb, &orec->or_fid);
	m0sim_sb_printf(sb, ",\"size\":%" PRIu64 ",\"version\":%" PRIu64
			",\"devices\":%u,\"block_size\":%u",
			orec->or_size, orec->or_version, orec->or_devices,
			orec->or_block_size);
}

M0_INTERNAL int m0sim_obj_getattr_json(struct m0sim_store *st, const char *name,
				       size_t nlen, struct m0sim_sbuf *sb,
				       char *msg, size_t msglen)
{
	struct m0sim_obj_rec orec;
	int rc;

	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	rc = obj_get(st, name, nlen, &orec);
	if (rc != 0)
		return fail(msg, msglen, rc, "object %.*s: %s", (int)nlen, name,
			    rc == -ENOENT ? "no such object" : strerror(-rc));
	m0sim_sb_printf(sb, "{");
	obj_json(sb, name, nlen, &orec);
	m0sim_sb_printf(sb, "}");
	return 0;
}

/* "cobs":[...] of an object; cobs are loaded. */
static void cobs_json(struct m0sim_store *st, struct m0_cob **cobs,
		      struct m0sim_sbuf *sb)
{
	uint32_t d, e;

	m0sim_sb_printf(sb, "\"parity_device\":%u,\"cobs\":[", st->st_ndev);
	for (d = 0; d <= st->st_ndev; d++) {
		const struct m0_cob *c = cobs[d];

		m0sim_sb_printf(sb, "%s{\"device\":%u,\"cob_fid\":", d ? "," : "",
				c->co_device);
		m0sim_sb_fid(sb, &c->co_oikey.cok_fid);
		m0sim_sb_printf(sb, ",\"parity\":%s,\"path\":",
				d == st->st_ndev ? "true" : "false");
		m0sim_sb_json_str(sb, st->st_dev[d].so_path,
				  strlen(st->st_dev[d].so_path));
		m0sim_sb_printf(sb, ",\"server\":");
		m0sim_sb_json_str(sb, st->st_server_ep ? st->st_server_ep : "",
				  st->st_server_ep ? strlen(st->st_server_ep) : 0);
		m0sim_sb_printf(sb, ",\"size\":%" PRIu64 ",\"blocks\":%u,\"extents\":[",
				c->co_nsrec.cnr_size, c->co_emap.em_nr_blocks);
		for (e = 0; e < c->co_emap.em_nr_ext; e++)
			m0sim_sb_printf(sb, "%s{\"start\":%" PRIu64 ",\"end\":%" PRIu64 "}",
					e ? "," : "", c->co_emap.em_ext[e].e_start,
					c->co_emap.em_ext[e].e_end);
		m0sim_sb_printf(sb, "]}");
	}
	m0sim_sb_printf(sb, "]");
}

M0_INTERNAL int m0sim_obj_info_json(struct m0sim_store *st, const char *name,
				    size_t nlen, struct m0sim_sbuf *sb,
				    char *msg, size_t msglen)
{
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	struct m0sim_obj_rec orec;
	pthread_mutex_t *lock;
	struct m0_fid gob;
	int rc;

	rc = name_check(name, nlen, msg, msglen);
	if (rc != 0)
		return rc;
	m0sim_name_to_fid(name, nlen, &gob);
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = obj_get(st, name, nlen, &orec);
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "object %.*s: %s", (int)nlen, name,
			  rc == -ENOENT ? "no such object" : strerror(-rc));
		goto out;
	}
	rc = cobs_load(st, &gob, cobs, msg, msglen);
	if (rc != 0)
		goto out;
	m0sim_sb_printf(sb, "{");
	obj_json(sb, name, nlen, &orec);
	m0sim_sb_printf(sb, ",");
	cobs_json(st, cobs, sb);
	m0sim_sb_printf(sb, "}");
out:
	pthread_mutex_unlock(lock);
	cobs_put(cobs, st->st_ndev + 1);
	return rc;
}

/* The gob fid of a gob or cob fid. */
static int fid_gob(const struct m0_fid *fid, struct m0_fid *gob)
{
	switch (m0_fid_tchar(fid)) {
	case M0_FID_TYPE_GOB:
		*gob = *fid;
		return 0;
	case M0_FID_TYPE_COB:
		m0_fid_convert_cob2gob(fid, gob);
		return 0;
	default:
		return -EINVAL;
	}
}

M0_INTERNAL int m0sim_store_cob_list(struct m0sim_store *st,
				     const struct m0_fid *fid,
				     struct m0sim_sbuf *sb)
{
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	pthread_mutex_t *lock;
	struct m0_fid gob;
	int rc;

	rc = fid_gob(fid, &gob);
	if (rc != 0)
		return rc;
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = cobs_load(st, &gob, cobs, NULL, 0);
	if (rc == 0) {
		m0sim_sb_printf(sb, "{\"fid\":");
		m0sim_sb_fid(sb, &gob);
		m0sim_sb_printf(sb, ",\"devices\":%u,\"block_size\":%d,",
				st->st_ndev, M0SIM_BLOCK_SIZE);
		cobs_json(st, cobs, sb);
		m0sim_sb_printf(sb, "}");
	}
	pthread_mutex_unlock(lock);
	cobs_put(cobs, st->st_ndev + 1);
	return rc;
}

/** Rebuilds one block from the other blocks of its stripe and the parity.
 * fid is the object fid (block = object data block) or a cob fid (block =
 * block of that cob, which may be the parity cob). */
M0_INTERNAL int m0sim_store_block_repair(struct m0sim_store *st,
					 const struct m0_fid *fid,
					 uint64_t block, char *msg,
					 size_t msglen)
{
	const uint32_t N = st->st_ndev;
	struct m0_cob *cobs[M0SIM_DEV_MAX + 1] = { NULL };
	pthread_mutex_t *lock;
	struct m0_fid gob;
	uint8_t *buf = NULL, *recon;
	uint64_t j, dev_block[M0SIM_DEV_MAX + 1];
	uint32_t d, target;
	int other_bad = -1;
	size_t bytes = (size_t)(N + 2) << M0SIM_BLOCK_SHIFT;
	int rc;

	if (fid_gob(fid, &gob) != 0)
		return fail(msg, msglen, -EINVAL, FID_F " is not an object or cob fid",
			    FID_P(fid));
	if (m0_fid_tchar(fid) == M0_FID_TYPE_GOB) {
		target = (uint32_t)(block % N);
		j = block / N;
	} else {
		target = m0_fid_cob_device_id(fid);
		j = block;
		if (target > N)
			return fail(msg, msglen, -EINVAL, "cob " FID_F ": no device %u",
				    FID_P(fid), target);
	}
	lock = obj_lock(st, &gob);
	pthread_mutex_lock(lock);
	rc = cobs_load(st, &gob, cobs, msg, msglen);
	if (rc != 0)
		goto out;
	if (j >= cobs[target]->co_emap.em_nr_blocks) {
		rc = fail(msg, msglen, -ERANGE,
			  "object " FID_F ": stripe %" PRIu64 " is beyond its %u stripes",
			  FID_P(&gob), j, cobs[target]->co_emap.em_nr_blocks);
		goto out;
	}
	buf = m0_alloc_aligned(bytes, M0SIM_BLOCK_SHIFT);
	if (buf == NULL) {
		rc = fail(msg, msglen, -ENOMEM, "out of memory");
		goto out;
	}
	recon = buf + ((size_t)(N + 1) << M0SIM_BLOCK_SHIFT);
	/* Read stripe j from every cob and check each block. */
	for (d = 0; d <= N; d++) {
		uint8_t *blk = buf + ((size_t)d << M0SIM_BLOCK_SHIFT);

		if (emap_block(&cobs[d]->co_emap, j, &dev_block[d]) != 0) {
			rc = fail(msg, msglen, -EIO, "cob on device %u lacks stripe %" PRIu64,
				  d, j);
			goto out;
		}
		rc = stob_rw(cobs[d]->co_stob, SIO_READ, blk, 1, dev_block[d]);
		if (rc != 0) {
			rc = fail(msg, msglen, rc, "device %u: read: %s", d, strerror(-rc));
			goto out;
		}
		if (d != target && other_bad < 0 &&
		    m0sim_crc32(0, blk, M0SIM_BLOCK_SIZE) != cobs[d]->co_emap.em_csum[j])
			other_bad = (int)d;
	}
	if (m0sim_crc32(0, buf + ((size_t)target << M0SIM_BLOCK_SHIFT),
			M0SIM_BLOCK_SIZE) == cobs[target]->co_emap.em_csum[j]) {
		rc = fail(msg, msglen, 0,
			  "block is healthy: object " FID_F " stripe %" PRIu64
			  " device %u device block %" PRIu64, FID_P(&gob), j, target,
			  dev_block[target]);
		goto out;
	}
	if (other_bad >= 0) {
		rc = fail(msg, msglen, -EIO,
			  "cannot repair: stripe %" PRIu64 " also has a bad block "
			  "on device %d (device block %" PRIu64 ")", j, other_bad,
			  dev_block[other_bad]);
		goto out;
	}
	memset(recon, 0, M0SIM_BLOCK_SIZE);
	for (d = 0; d <= N; d++) {
		if (d != target)
			xor_into(recon, buf + ((size_t)d << M0SIM_BLOCK_SHIFT));
	}
	if (m0sim_crc32(0, recon, M0SIM_BLOCK_SIZE) != cobs[target]->co_emap.em_csum[j]) {
		rc = fail(msg, msglen, -EIO,
			  "reconstructed block does not match its checksum "
			  "(object " FID_F " stripe %" PRIu64 " device %u)",
			  FID_P(&gob), j, target);
		goto out;
	}
	rc = stob_rw(cobs[target]->co_stob, SIO_WRITE, recon, 1, dev_block[target]);
	if (rc == 0 && st->st_sync && fdatasync(cobs[target]->co_stob->so_fd) != 0)
		rc = -errno;
	if (rc != 0) {
		rc = fail(msg, msglen, rc, "device %u: write: %s", target,
			  strerror(-rc));
		goto out;
	}
	__atomic_add_fetch(&st->st_nr_repairs, 1, __ATOMIC_RELAXED);
	rc = fail(msg, msglen, 0,
		  "repaired object " FID_F " stripe %" PRIu64 ": cob " FID_F
		  " on device %u, device block %" PRIu64, FID_P(&gob), j,
		  FID_P(&cobs[target]->co_oikey.cok_fid), target,
		  dev_block[target]);
	M0_LOG(M0_NOTICE, "repaired object " FID_F " stripe %" PRIu64 " device %u",
	       FID_P(&gob), j, target);
out:
	pthread_mutex_unlock(lock);
	cobs_put(cobs, N + 1);
	if (buf != NULL)
		m0_free_aligned(buf, bytes, M0SIM_BLOCK_SHIFT);
	return rc;
}

static int meta_key_check(const char *key)
{
	size_t n = strlen(key);

	/* Free-form keys start with a printable byte, so they never collide
	 * with the binary object and cob records. */
	if (n == 0 || n > BE_KEY_MAX || (unsigned char)key[0] < 0x20)
		return -EINVAL;
	return 0;
}

M0_INTERNAL int m0sim_store_meta_update(struct m0sim_store *st, const char *key,
					const char *value)
{
	struct m0_btree_rec rec = {
		.r_key = { { strlen(key), (void *)key } },
		.r_val = { strlen(value), (void *)value },
	};
	struct m0_be_tx tx;
	int rc;

	if (meta_key_check(key) != 0 || strlen(value) > BE_VAL_MAX)
		return -EINVAL;
	m0_be_tx_open(&tx, &st->st_seg);
	rc = m0_btree_update(&st->st_tree, &rec, NULL, BOF_INSERT_IF_NOT_FOUND,
			     NULL, &tx);
	if (rc != 0) {
		m0_be_tx_abort(&tx);
		return rc;
	}
	rc = m0_be_tx_close(&tx);
	M0_LOG(M0_NOTICE, "meta update %s: %d", key, rc);
	return rc;
}

M0_INTERNAL int m0sim_store_meta_get(struct m0sim_store *st, const char *key,
				     char *value, size_t len)
{
	struct m0_btree_key k = { { strlen(key), (void *)key } };
	size_t vlen;
	int rc;

	if (meta_key_check(key) != 0 || len == 0)
		return -EINVAL;
	rc = tree_get(&st->st_tree, &k, value, len - 1, &vlen);
	if (rc == 0)
		value[M0_MIN(vlen, len - 1)] = 0;
	return rc;
}

M0_INTERNAL void m0sim_store_stats_json(struct m0sim_store *st,
					struct m0sim_sbuf *sb)
{
	const struct be_sb *sbk;
	uint32_t d;

	m0sim_sb_printf(sb, "{\"devices\":%u,\"block_size\":%d,\"objects\":%" PRIu64
			",\"csum_errors\":%" PRIu64 ",\"repairs\":%" PRIu64
			",\"device_blocks\":[", st->st_ndev, M0SIM_BLOCK_SIZE,
			__atomic_load_n(&st->st_nr_objects, __ATOMIC_RELAXED),
			__atomic_load_n(&st->st_nr_csum_errors, __ATOMIC_RELAXED),
			__atomic_load_n(&st->st_nr_repairs, __ATOMIC_RELAXED));
	for (d = 0; d <= st->st_ndev; d++) {
		struct m0_ad_balloc *b = &st->st_balloc[d];

		pthread_mutex_lock(&b->bb_lock);
		m0sim_sb_printf(sb, "%s{\"device\":%u,\"blocks\":%" PRIu64
				",\"used\":%" PRIu64 "}", d ? "," : "", d,
				b->bb_nblocks, b->bb_used);
		pthread_mutex_unlock(&b->bb_lock);
	}
	pthread_mutex_lock(&st->st_seg.seg_lock);
	sbk = m0_be_seg_sb(&st->st_seg);
	m0sim_sb_printf(sb, "],\"btree\":{\"root\":%u,\"root_addr\":\"0x%" PRIxPTR
			"\",\"height\":%u,\"pages\":%u,"
			"\"lsn\":%" PRIu64 ",\"wal_bytes\":%" PRIu64
			",\"checkpoints\":%" PRIu64 ",\"replayed_tx\":%" PRIu64 "}}",
			sbk->sb_root, m0_btree_root_addr(&st->st_tree),
			sbk->sb_height, sbk->sb_npages, sbk->sb_lsn,
			st->st_seg.seg_wal_off, st->st_seg.seg_nr_checkpoints,
			st->st_seg.seg_replayed);
	pthread_mutex_unlock(&st->st_seg.seg_lock);
}

/* ---------------------------------------------------------- open/close */

struct rebuild_ctx {
	struct m0sim_store *rb_st;
	uint8_t rb_type;
	uint64_t rb_nr;
	int rb_rc;
};

static int rebuild_act(struct m0_btree_cb *cb, struct m0_btree_rec *rec)
{
	struct rebuild_ctx *c = cb->c_datum;
	const uint8_t *k = rec->r_key.k_data.b_addr;
	struct m0sim_emap em;
	struct m0_fid cf;
	uint32_t dev, e;

	if (rec->r_key.k_data.b_nob < 1 || k[0] != c->rb_type)
		return 1;   /* past the records of this type */
	c->rb_nr++;
	if (c->rb_type != KEY_EMAP)
		return 0;
	if (rec->r_key.k_data.b_nob != 17 ||
	    emap_decode(rec->r_val.b_addr, rec->r_val.b_nob, &em) != 0) {
		c->rb_rc = -EIO;
		return 1;
	}
	fid_from_be(k + 1, &cf);
	dev = m0_fid_cob_device_id(&cf);
	if (dev > c->rb_st->st_ndev) {
		c->rb_rc = -EIO;
		return 1;
	}
	for (e = 0; e < em.em_nr_ext; e++)
		balloc_reserve(&c->rb_st->st_balloc[dev], &em.em_ext[e]);
	return 0;
}

static int store_scan(struct m0sim_store *st, uint8_t type, uint64_t *nr)
{
	uint8_t kb = type;
	struct m0_btree_key key = { { 1, &kb } };
	struct rebuild_ctx c = { st, type, 0, 0 };
	struct m0_btree_cb cb = { rebuild_act, &c };

	m0_btree_iter(&st->st_tree, &key, &cb, 0, NULL);
	*nr = c.rb_nr;
	return c.rb_rc;
}

int m0sim_store_open(struct m0sim_store *st, const char *dir, uint32_t *ndev,
		     bool sync, char *err, size_t errlen)
{
	uint32_t devs = *ndev, d;
	uint64_t nr;
	int rc, i;

	memset(st, 0, sizeof *st);
	if (devs < 1 || devs > M0SIM_DEV_MAX) {
		snprintf(err, errlen, "devices must be 1..%d", M0SIM_DEV_MAX);
		return -EINVAL;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -errno;
	}
	snprintf(st->st_dir, sizeof st->st_dir, "%s", dir);
	st->st_sync = sync;
	for (i = 0; i < M0SIM_OBJ_LOCKS; i++)
		pthread_mutex_init(&st->st_obj_locks[i], NULL);
	for (d = 0; d <= M0SIM_DEV_MAX; d++) {
		st->st_dev[d].so_fd = -1;
		pthread_mutex_init(&st->st_balloc[d].bb_lock, NULL);
		st->st_balloc[d].bb_dev = d;
	}
	rc = m0_be_seg_open(&st->st_seg, dir, &devs, sync, err, errlen);
	if (rc != 0)
		return rc;
	if (devs != *ndev)
		fprintf(stderr, "m0d: %s was created with %u data devices; using %u\n",
			dir, devs, devs);
	*ndev = st->st_ndev = devs;
	m0_btree_open(&st->st_tree, &st->st_seg);
	st->st_cob_dom = (struct m0_cob_domain){
		.cd_id = 1, .cd_tree = &st->st_tree,
		.cd_stobs = st->st_dev, .cd_nr_stobs = devs + 1,
		.cd_ballrooms = st->st_balloc,
	};
	for (d = 0; d <= devs; d++) {
		struct m0_stob *s = &st->st_dev[d];
		struct stat sst;

		snprintf(st->st_dev_path[d], sizeof st->st_dev_path[d], "%s/dev%u",
			 dir, d);
		s->so_path = st->st_dev_path[d];
		s->so_dev = d;
		s->so_id.si_domain_fid = (struct m0_fid){ ((uint64_t)'S' << 56) | 1, 0 };
		s->so_id.si_fid = (struct m0_fid){ (uint64_t)'s' << 56, d };
		s->so_fd = open(s->so_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (s->so_fd < 0 || fstat(s->so_fd, &sst) != 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", s->so_path, strerror(errno));
			return rc;
		}
		rc = balloc_grow(&st->st_balloc[d],
				 (uint64_t)sst.st_size >> M0SIM_BLOCK_SHIFT);
		if (rc != 0)
			return rc;
	}
	/* The allocators start empty; mark what committed metadata uses. */
	rc = store_scan(st, KEY_EMAP, &nr);
	if (rc == 0)
		rc = store_scan(st, KEY_OBJ, &st->st_nr_objects);
	if (rc != 0) {
		snprintf(err, errlen, "metadata scan: %s", strerror(-rc));
		return rc;
	}
	M0_LOG(M0_NOTICE, "store %s: %u+1 devices, %" PRIu64 " objects",
	       dir, devs, st->st_nr_objects);
	return 0;
}

void m0sim_store_close(struct m0sim_store *st)
{
	uint32_t d;
	int i;

	m0_be_seg_close(&st->st_seg);
	for (d = 0; d <= M0SIM_DEV_MAX; d++) {
		if (st->st_dev[d].so_fd >= 0)
			close(st->st_dev[d].so_fd);
		st->st_dev[d].so_fd = -1;
		free(st->st_balloc[d].bb_map);
		st->st_balloc[d].bb_map = NULL;
		pthread_mutex_destroy(&st->st_balloc[d].bb_lock);
	}
	for (i = 0; i < M0SIM_OBJ_LOCKS; i++)
		pthread_mutex_destroy(&st->st_obj_locks[i]);
}
