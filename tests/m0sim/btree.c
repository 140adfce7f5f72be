/* btree.c - the metadata segment: page cache, write-ahead log, transactions
 * and a B-tree with variable-size keys and values in fixed 8 KiB nodes. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_BE
#include "be.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SB_MAGIC 0x31626d69733030ULL   /* "00simb1" */
enum {
	SB_VERSION = 1,
	WAL_MAGIC = 0x52574c57,          /* "WLWR" */
	WAL_TRAILER_MAGIC = 0x444e4557,  /* "WEND" */
	/* A record is at least 7 bytes (slot, lengths, 1-byte key). */
	REC_MAX = BE_NODE_SIZE / 7 + 2,
};

/** Log record header; followed by wh_nr x (u32 pgno, u32 pad, page) and a
 * trailer (u32 crc32 of everything before it, u32 WAL_TRAILER_MAGIC). */
struct wal_hdr {
	uint32_t wh_magic;
	uint32_t wh_nr;
	uint64_t wh_lsn;
	uint64_t wh_len;   /* whole record, header and trailer included */
};

/* ------------------------------------------------------------- file io */

static int pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
				   off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

/* Returns bytes read (short at end of file) or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* ------------------------------------------------- crash test hooks */

/* M0SIM_CRASH=wal-torn|after-wal|mid-apply and M0SIM_CRASH_AT=N make the
 * N-th commit after open kill the process at that point (tests only). */
enum crash_point { CRASH_NONE, CRASH_WAL_TORN, CRASH_AFTER_WAL, CRASH_MID_APPLY };

static enum crash_point crash_point(const struct m0_be_seg *seg)
{
	const char *m = getenv("M0SIM_CRASH");
	const char *at = getenv("M0SIM_CRASH_AT");
	uint64_t n = at ? strtoull(at, NULL, 10) : 1;

	if (m == NULL || seg->seg_nr_tx + 1 != n)
		return CRASH_NONE;
	if (strcmp(m, "wal-torn") == 0)
		return CRASH_WAL_TORN;
	if (strcmp(m, "after-wal") == 0)
		return CRASH_AFTER_WAL;
	if (strcmp(m, "mid-apply") == 0)
		return CRASH_MID_APPLY;
	return CRASH_NONE;
}

static void crash_now(const char *where)
{
	fprintf(stderr, "m0sim: crash test hook: exiting %s\n", where);
	_exit(99);
}

/* ------------------------------------------------------------ segment */

static struct be_sb *seg_sb(struct m0_be_seg *seg)
{
	return (struct be_sb *)(void *)seg->seg_pages[0];
}

const struct be_sb *m0_be_seg_sb(const struct m0_be_seg *seg)
{
	return (const struct be_sb *)(const void *)seg->seg_pages[0];
}

static struct bnode_head *seg_node(struct m0_be_seg *seg, uint32_t pgno)
{
	return (struct bnode_head *)(void *)seg->seg_pages[pgno];
}

static int seg_pages_reserve(struct m0_be_seg *seg, uint32_t nr)
{
	uint32_t cap = seg->seg_pages_cap ? seg->seg_pages_cap : 64;
	uint8_t **p;

	if (nr <= seg->seg_pages_cap)
		return 0;
	while (cap < nr)
		cap *= 2;
	p = realloc(seg->seg_pages, cap * sizeof *p);
	if (p == NULL)
		return -ENOMEM;
	memset(p + seg->seg_pages_cap, 0,
	       (cap - seg->seg_pages_cap) * sizeof *p);
	seg->seg_pages = p;
	seg->seg_pages_cap = cap;
	return 0;
}

/* Applies every complete log record to meta.db, then empties the log. */
static int wal_replay(struct m0_be_seg *seg)
{
	off_t off = 0;
	uint64_t applied = 0;
	int rc = 0;

	for (;;) {
		struct wal_hdr h;
		uint8_t *buf;
		uint32_t crc, tmagic, i;
		size_t expect;

		if (pread_full(seg->seg_wal_fd, &h, sizeof h, off) != (ssize_t)sizeof h)
			break;
		if (h.wh_magic != WAL_MAGIC || h.wh_nr == 0 || h.wh_nr > 1u << 20)
			break;
		expect = sizeof h + (size_t)h.wh_nr * (8 + BE_NODE_SIZE) + 8;
		if (h.wh_len != expect)
			break;
		buf = malloc(expect);
		if (buf == NULL)
			return -ENOMEM;
		if (pread_full(seg->seg_wal_fd, buf, expect, off) != (ssize_t)expect) {
			free(buf);   /* torn record at the end: not committed */
			break;
		}
		memcpy(&crc, buf + expect - 8, 4);
		memcpy(&tmagic, buf + expect - 4, 4);
		if (tmagic != WAL_TRAILER_MAGIC ||
		    crc != m0sim_crc32(0, buf, expect - 8)) {
			free(buf);
			break;
		}
		for (i = 0; i < h.wh_nr && rc == 0; i++) {
			const uint8_t *e = buf + sizeof h + (size_t)i * (8 + BE_NODE_SIZE);
			uint32_t pgno;

			memcpy(&pgno, e, 4);
			rc = pwrite_full(seg->seg_db_fd, e + 8, BE_NODE_SIZE,
					 (off_t)pgno * BE_NODE_SIZE);
		}
		free(buf);
		if (rc != 0)
			return rc;
		M0_LOG(M0_NOTICE, "replayed log record lsn=%" PRIu64 " pages=%u",
		       h.wh_lsn, h.wh_nr);
		off += (off_t)expect;
		applied++;
	}
	if (applied > 0 && fdatasync(seg->seg_db_fd) != 0)
		return -errno;
	if (ftruncate(seg->seg_wal_fd, 0) != 0 || fsync(seg->seg_wal_fd) != 0)
		return -errno;
	seg->seg_replayed = applied;
	return 0;
}

static void node_build(struct bnode_head *h, uint32_t pgno, uint16_t level,
		       uint32_t left, const void *recs, int n, uint64_t lsn);

static int seg_format(struct m0_be_seg *seg, uint32_t devices)
{
	struct be_sb *sb;
	int rc;

	rc = seg_pages_reserve(seg, 64);
	if (rc != 0)
		return rc;
	seg->seg_pages[0] = calloc(1, BE_NODE_SIZE);
	seg->seg_pages[1] = calloc(1, BE_NODE_SIZE);
	if (seg->seg_pages[0] == NULL || seg->seg_pages[1] == NULL)
		return -ENOMEM;
	sb = seg_sb(seg);
	*sb = (struct be_sb){
		.sb_magic = SB_MAGIC,
		.sb_version = SB_VERSION,
		.sb_node_size = BE_NODE_SIZE,
		.sb_root = 1,
		.sb_npages = 2,
		.sb_height = 1,
		.sb_devices = devices,
		.sb_block_size = 4096,
	};
	node_build(seg_node(seg, 1), 1, 0, 0, NULL, 0, 0);
	rc = pwrite_full(seg->seg_db_fd, seg->seg_pages[0], BE_NODE_SIZE, 0);
	if (rc == 0)
		rc = pwrite_full(seg->seg_db_fd, seg->seg_pages[1], BE_NODE_SIZE,
				 BE_NODE_SIZE);
	if (rc == 0 && fsync(seg->seg_db_fd) != 0)
		rc = -errno;
	return rc;
}

static int seg_load(struct m0_be_seg *seg, char *err, size_t errlen)
{
	struct be_sb sb;
	uint32_t i;
	int rc;

	if (pread_full(seg->seg_db_fd, &sb, sizeof sb, 0) != (ssize_t)sizeof sb ||
	    sb.sb_magic != SB_MAGIC || sb.sb_node_size != BE_NODE_SIZE ||
	    sb.sb_npages < 2 || sb.sb_root >= sb.sb_npages) {
		snprintf(err, errlen, "meta.db: bad superblock");
		return -EINVAL;
	}
	rc = seg_pages_reserve(seg, sb.sb_npages + 64);
	if (rc != 0)
		return rc;
	for (i = 0; i < sb.sb_npages; i++) {
		seg->seg_pages[i] = malloc(BE_NODE_SIZE);
		if (seg->seg_pages[i] == NULL)
			return -ENOMEM;
		if (pread_full(seg->seg_db_fd, seg->seg_pages[i], BE_NODE_SIZE,
			       (off_t)i * BE_NODE_SIZE) != BE_NODE_SIZE) {
			snprintf(err, errlen, "meta.db: page %u is missing", i);
			return -EIO;
		}
		if (i > 0 && seg_node(seg, i)->bh_magic != BNODE_MAGIC) {
			snprintf(err, errlen, "meta.db: page %u is not a node", i);
			return -EIO;
		}
	}
	return 0;
}

int m0_be_seg_open(struct m0_be_seg *seg, const char *dir, uint32_t *devices,
		   bool sync, char *err, size_t errlen)
{
	pthread_mutexattr_t attr;
	char path[4096];
	struct stat st;
	int rc;

	memset(seg, 0, sizeof *seg);
	seg->seg_db_fd = seg->seg_wal_fd = -1;
	seg->seg_sync = sync;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&seg->seg_lock, &attr);
	pthread_mutexattr_destroy(&attr);

	snprintf(path, sizeof path, "%s/meta.db", dir);
	seg->seg_db_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (seg->seg_db_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	snprintf(path, sizeof path, "%s/meta.wal", dir);
	seg->seg_wal_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (seg->seg_wal_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	rc = wal_replay(seg);
	if (rc != 0) {
		snprintf(err, errlen, "meta.wal replay: %s", strerror(-rc));
		return rc;
	}
	if (fstat(seg->seg_db_fd, &st) != 0)
		return -errno;
	if (st.st_size == 0) {
		rc = seg_format(seg, *devices);
		if (rc != 0)
			snprintf(err, errlen, "meta.db format: %s", strerror(-rc));
	} else {
		rc = seg_load(seg, err, errlen);
	}
	if (rc == 0)
		*devices = seg_sb(seg)->sb_devices;
	return rc;
}

static int seg_checkpoint(struct m0_be_seg *seg)
{
	if (seg->seg_wal_off == 0)
		return 0;
	if (seg->seg_sync && fdatasync(seg->seg_db_fd) != 0)
		return -errno;
	if (ftruncate(seg->seg_wal_fd, 0) != 0)
		return -errno;
	if (seg->seg_sync && fdatasync(seg->seg_wal_fd) != 0)
		return -errno;
	seg->seg_wal_off = 0;
	seg->seg_nr_checkpoints++;
	M0_LOG(M0_INFO, "checkpoint %" PRIu64, seg->seg_nr_checkpoints);
	return 0;
}

void m0_be_seg_close(struct m0_be_seg *seg)
{
	uint32_t i;

	pthread_mutex_lock(&seg->seg_lock);
	if (seg->seg_db_fd >= 0 && seg->seg_pages != NULL && seg->seg_pages[0] != NULL) {
		/* Make meta.db complete on its own. */
		if (fdatasync(seg->seg_db_fd) == 0)
			seg_checkpoint(seg);
	}
	if (seg->seg_db_fd >= 0)
		close(seg->seg_db_fd);
	if (seg->seg_wal_fd >= 0)
		close(seg->seg_wal_fd);
	seg->seg_db_fd = seg->seg_wal_fd = -1;
	for (i = 0; i < seg->seg_pages_cap; i++)
		free(seg->seg_pages[i]);
	free(seg->seg_pages);
	seg->seg_pages = NULL;
	seg->seg_pages_cap = 0;
	pthread_mutex_unlock(&seg->seg_lock);
	pthread_mutex_destroy(&seg->seg_lock);
}

/* -------------------------------------------------------- transactions */

/** Opens a transaction; it holds the segment lock until closed/aborted. */
M0_PROBE void m0_be_tx_open(struct m0_be_tx *tx, struct m0_be_seg *seg)
{
	pthread_mutex_lock(&seg->seg_lock);
	memset(tx, 0, sizeof *tx);
	tx->t_seg = seg;
	tx->t_id = seg_sb(seg)->sb_lsn + 1;
	tx->t_state = M0_BTS_ACTIVE;
	tx->t_start = m0_time_now();
	seg->seg_tx = tx;
}

/* Records that the tx changes page pgno, saving its before-image. */
static int tx_dirty(struct m0_be_tx *tx, uint32_t pgno)
{
	struct m0_be_seg *seg = tx->t_seg;
	uint8_t *before;
	uint32_t i;

	for (i = 0; i < tx->t_nr; i++) {
		if (tx->t_pgno[i] == pgno)
			return 0;
	}
	if (tx->t_nr == tx->t_cap) {
		uint32_t cap = tx->t_cap ? tx->t_cap * 2 : 16;
		uint32_t *pg = realloc(tx->t_pgno, cap * sizeof *pg);
		uint8_t **bf;

		if (pg == NULL)
			return -ENOMEM;
		tx->t_pgno = pg;
		bf = realloc(tx->t_before, cap * sizeof *bf);
		if (bf == NULL)
			return -ENOMEM;
		tx->t_before = bf;
		tx->t_cap = cap;
	}
	before = malloc(BE_NODE_SIZE);
	if (before == NULL)
		return -ENOMEM;
	memcpy(before, seg->seg_pages[pgno], BE_NODE_SIZE);
	tx->t_pgno[tx->t_nr] = pgno;
	tx->t_before[tx->t_nr] = before;
	tx->t_nr++;
	return 0;
}

/* Allocates a new page at the end of the segment. */
static int tx_page_alloc(struct m0_be_tx *tx, uint32_t *out)
{
	struct m0_be_seg *seg = tx->t_seg;
	uint32_t pgno;
	int rc;

	rc = tx_dirty(tx, 0);
	if (rc != 0)
		return rc;
	pgno = seg_sb(seg)->sb_npages;
	rc = seg_pages_reserve(seg, pgno + 1);
	if (rc != 0)
		return rc;
	seg->seg_pages[pgno] = calloc(1, BE_NODE_SIZE);
	if (seg->seg_pages[pgno] == NULL)
		return -ENOMEM;
	rc = tx_dirty(tx, pgno);
	if (rc != 0) {
		free(seg->seg_pages[pgno]);
		seg->seg_pages[pgno] = NULL;
		return rc;
	}
	/* A page born in this tx has no before-image: abort frees it. */
	free(tx->t_before[tx->t_nr - 1]);
	tx->t_before[tx->t_nr - 1] = NULL;
	seg_sb(seg)->sb_npages = pgno + 1;
	*out = pgno;
	return 0;
}

static void tx_end(struct m0_be_tx *tx)
{
	struct m0_be_seg *seg = tx->t_seg;
	uint32_t i;

	for (i = 0; i < tx->t_nr; i++)
		free(tx->t_before[i]);
	free(tx->t_before);
	free(tx->t_pgno);
	tx->t_before = NULL;
	tx->t_pgno = NULL;
	tx->t_nr = tx->t_cap = 0;
	tx->t_state = M0_BTS_DONE;
	seg->seg_tx = NULL;
	pthread_mutex_unlock(&seg->seg_lock);
}

/* Puts the before-images back (in reverse) and drops new pages. */
static void tx_restore(struct m0_be_tx *tx)
{
	struct m0_be_seg *seg = tx->t_seg;
	uint32_t i;

	for (i = tx->t_nr; i-- > 0;) {
		uint32_t pgno = tx->t_pgno[i];

		if (tx->t_before[i] != NULL) {
			memcpy(seg->seg_pages[pgno], tx->t_before[i], BE_NODE_SIZE);
		} else {
			free(seg->seg_pages[pgno]);
			seg->seg_pages[pgno] = NULL;
		}
	}
}

M0_PROBE void m0_be_tx_abort(struct m0_be_tx *tx)
{
	M0_LOG(M0_WARN, "tx %" PRIu64 " aborted, %u pages restored",
	       tx->t_id, tx->t_nr);
	tx_restore(tx);
	tx_end(tx);
}

/** Commits: log record, fsync, pages in place.  Returns 0 or -errno (the
 * transaction is then undone). */
M0_PROBE int m0_be_tx_close(struct m0_be_tx *tx)
{
	struct m0_be_seg *seg = tx->t_seg;
	enum crash_point cp;
	struct wal_hdr h;
	uint8_t *buf;
	size_t len, o;
	uint32_t i, crc, tmagic = WAL_TRAILER_MAGIC;
	int rc;

	if (tx->t_nr == 0) {
		tx_end(tx);
		return 0;
	}
	rc = tx_dirty(tx, 0);
	if (rc != 0)
		goto undo;
	seg_sb(seg)->sb_lsn = tx->t_id;

	len = sizeof h + (size_t)tx->t_nr * (8 + BE_NODE_SIZE) + 8;
	buf = malloc(len);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto undo;
	}
	h = (struct wal_hdr){ WAL_MAGIC, tx->t_nr, tx->t_id, len };
	memcpy(buf, &h, sizeof h);
	o = sizeof h;
	for (i = 0; i < tx->t_nr; i++) {
		uint32_t pg[2] = { tx->t_pgno[i], 0 };

		memcpy(buf + o, pg, 8);
		memcpy(buf + o + 8, seg->seg_pages[tx->t_pgno[i]], BE_NODE_SIZE);
		o += 8 + BE_NODE_SIZE;
	}
	crc = m0sim_crc32(0, buf, o);
	memcpy(buf + o, &crc, 4);
	memcpy(buf + o + 4, &tmagic, 4);

	cp = crash_point(seg);
	if (cp == CRASH_WAL_TORN) {
		pwrite_full(seg->seg_wal_fd, buf, len / 2, (off_t)seg->seg_wal_off);
		fdatasync(seg->seg_wal_fd);
		crash_now("with a torn log record");
	}
	rc = pwrite_full(seg->seg_wal_fd, buf, len, (off_t)seg->seg_wal_off);
	if (rc == 0 && seg->seg_sync && fdatasync(seg->seg_wal_fd) != 0)
		rc = -errno;
	if (rc != 0) {
		/* Cut off whatever part of the record reached the log. */
		if (ftruncate(seg->seg_wal_fd, (off_t)seg->seg_wal_off) != 0)
			M0_LOG(M0_ERROR, "log truncate failed");
		free(buf);
		goto undo;
	}
	if (cp == CRASH_AFTER_WAL)
		crash_now("after the log write");
	/* Committed.  Now the pages go in place. */
	for (i = 0; i < tx->t_nr; i++) {
		int wrc;

		if (cp == CRASH_MID_APPLY && i == tx->t_nr / 2)
			crash_now("in the middle of applying a transaction");
		wrc = pwrite_full(seg->seg_db_fd, seg->seg_pages[tx->t_pgno[i]],
				  BE_NODE_SIZE, (off_t)tx->t_pgno[i] * BE_NODE_SIZE);
		if (wrc != 0) {
			/* The log has it; replay at next open repairs meta.db. */
			M0_LOG(M0_ERROR, "meta.db write failed: %d", wrc);
		}
	}
	free(buf);
	seg->seg_wal_off += len;
	seg->seg_nr_tx++;
	{
		uint64_t v[4] = { tx->t_id, tx->t_nr, len,
				  m0_time_now() - tx->t_start };
		m0_addb2_add(M0_AVI_BE_TX, 4, v);
	}
	M0_LOG(M0_DEBUG, "tx %" PRIu64 " committed, %u pages", tx->t_id, tx->t_nr);
	if (seg->seg_wal_off > BE_WAL_MAX) {
		rc = seg_checkpoint(seg);
		if (rc != 0)
			M0_LOG(M0_ERROR, "checkpoint failed: %d", rc);
		rc = 0;
	}
	tx_end(tx);
	return 0;
undo:
	tx_restore(tx);
	tx_end(tx);
	return rc;
}

/* --------------------------------------------------------------- nodes */

/** A record decoded from a node (pointers into a node image). */
struct brec {
	const uint8_t *k;
	uint32_t kl;
	const uint8_t *v;
	uint32_t vl;
};

static void rec_read(const struct bnode_head *h, int i, struct brec *r)
{
	const uint8_t *p = (const uint8_t *)h + h->bh_slot[i];
	uint16_t kl, vl;

	memcpy(&kl, p, 2);
	memcpy(&vl, p + 2, 2);
	r->k = p + 4;
	r->kl = kl;
	r->v = p + 4 + kl;
	r->vl = vl;
}

static size_t rec_size(const struct brec *r)
{
	return 2 + 4 + r->kl + r->vl;   /* slot + lengths + bytes */
}

static size_t recs_size(const struct brec *r, int n)
{
	size_t s = sizeof(struct bnode_head);
	int i;

	for (i = 0; i < n; i++)
		s += rec_size(&r[i]);
	return s;
}

static int node_recs(const struct bnode_head *h, struct brec *r)
{
	int i;

	for (i = 0; i < h->bh_used; i++)
		rec_read(h, i, &r[i]);
	return h->bh_used;
}

/* Writes a node from scratch.  The records must not point into h. */
static void node_build(struct bnode_head *h, uint32_t pgno, uint16_t level,
		       uint32_t left, const void *recs, int n, uint64_t lsn)
{
	const struct brec *r = recs;
	size_t off = BE_NODE_SIZE;
	int i;

	memset(h, 0, BE_NODE_SIZE);
	h->bh_magic = BNODE_MAGIC;
	h->bh_pgno = pgno;
	h->bh_level = level;
	h->bh_used = (uint16_t)n;
	h->bh_left = left;
	h->bh_lsn = lsn;
	for (i = 0; i < n; i++) {
		uint16_t kl = (uint16_t)r[i].kl, vl = (uint16_t)r[i].vl;
		uint8_t *p;

		off -= 4 + (size_t)kl + vl;
		p = (uint8_t *)h + off;
		memcpy(p, &kl, 2);
		memcpy(p + 2, &vl, 2);
		memcpy(p + 4, r[i].k, kl);
		if (vl > 0)
			memcpy(p + 4 + kl, r[i].v, vl);
		h->bh_slot[i] = (uint16_t)off;
	}
	h->bh_heap = (uint32_t)off;
}

static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
	int c = memcmp(a, b, M0_MIN(al, bl));

	if (c != 0)
		return c;
	return al < bl ? -1 : al > bl ? 1 : 0;
}

/** Binary search of a node: s_idx becomes the first record whose key is >=
 * find_key; returns true (and fills s_rec) when that key is equal. */
M0_PROBE bool bnode_find(struct slot *slot, struct m0_btree_key *find_key)
{
	const struct bnode_head *h = slot->s_node->n_head;
	const struct m0_buf *k = &find_key->k_data;
	struct brec r;
	int lo = 0, hi = h->bh_used;

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		rec_read(h, mid, &r);
		if (key_cmp(r.k, r.kl, k->b_addr, k->b_nob) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	slot->s_idx = lo;
	if (lo >= h->bh_used)
		return false;
	rec_read(h, lo, &r);
	if (key_cmp(r.k, r.kl, k->b_addr, k->b_nob) != 0)
		return false;
	slot->s_rec.r_key.k_data = (struct m0_buf){ r.kl, (void *)r.k };
	slot->s_rec.r_val = (struct m0_buf){ r.vl, (void *)r.v };
	slot->s_rec.r_flags = 0;
	return true;
}

static uint32_t rec_child(const struct brec *r)
{
	uint32_t c;

	memcpy(&c, r->v, 4);
	return c;
}

/* Child of an internal node covering key; *ci is its record index (-1 for
 * the leftmost child). */
static uint32_t child_of(const struct nd *nd, struct m0_btree_key *key, int *ci)
{
	struct slot s = { .s_node = nd };
	bool found = bnode_find(&s, key);
	int i = found ? s.s_idx : s.s_idx - 1;
	struct brec r;

	if (ci != NULL)
		*ci = i;
	if (i < 0)
		return nd->n_head->bh_left;
	rec_read(nd->n_head, i, &r);
	return rec_child(&r);
}

/* --------------------------------------------------------------- B-tree */

void m0_btree_open(struct m0_btree *arbor, struct m0_be_seg *seg)
{
	memset(arbor, 0, sizeof *arbor);
	arbor->t_seg = seg;
}

M0_PROBE int m0_btree_get(struct m0_btree *arbor, const struct m0_btree_key *key,
			  struct m0_btree_cb *cb, uint64_t flags,
			  struct m0_btree_op *op)
{
	struct m0_be_seg *seg = arbor->t_seg;
	uint32_t pg;
	int rc;

	(void)flags;
	(void)op;
	pthread_mutex_lock(&seg->seg_lock);
	arbor->t_nr_get++;
	pg = seg_sb(seg)->sb_root;
	for (;;) {
		struct nd nd = { seg_node(seg, pg), pg, arbor };

		if (nd.n_head->bh_level == 0) {
			struct slot s = { .s_node = &nd };

			if (bnode_find(&s, (struct m0_btree_key *)key))
				rc = cb != NULL && cb->c_act != NULL ?
					cb->c_act(cb, &s.s_rec) : 0;
			else
				rc = -ENOENT;
			break;
		}
		pg = child_of(&nd, (struct m0_btree_key *)key, NULL);
	}
	pthread_mutex_unlock(&seg->seg_lock);
	return rc;
}

static int iter_node(struct m0_btree *arbor, uint32_t pg,
		     struct m0_btree_key *key, struct m0_btree_cb *cb)
{
	struct m0_be_seg *seg = arbor->t_seg;
	struct nd nd = { seg_node(seg, pg), pg, arbor };
	const struct bnode_head *h = nd.n_head;
	struct brec r;
	int i, rc;

	if (h->bh_level == 0) {
		struct slot s = { .s_node = &nd };

		bnode_find(&s, key);
		for (i = s.s_idx; i < h->bh_used; i++) {
			struct m0_btree_rec rec;

			rec_read(h, i, &r);
			rec.r_key.k_data = (struct m0_buf){ r.kl, (void *)r.k };
			rec.r_val = (struct m0_buf){ r.vl, (void *)r.v };
			rec.r_flags = 0;
			rc = cb->c_act(cb, &rec);
			if (rc != 0)
				return rc;
		}
		return 0;
	}
	child_of(&nd, key, &i);
	for (; i < h->bh_used; i++) {
		uint32_t child;

		if (i < 0) {
			child = h->bh_left;
		} else {
			rec_read(h, i, &r);
			child = rec_child(&r);
		}
		rc = iter_node(arbor, child, key, cb);
		if (rc != 0)
			return rc;
	}
	return 0;
}

M0_PROBE int m0_btree_iter(struct m0_btree *arbor, const struct m0_btree_key *key,
			   struct m0_btree_cb *cb, uint64_t flags,
			   struct m0_btree_op *op)
{
	struct m0_be_seg *seg = arbor->t_seg;
	struct m0_btree_key empty = { { 0, (void *)"" } };
	int rc;

	(void)flags;
	(void)op;
	pthread_mutex_lock(&seg->seg_lock);
	rc = iter_node(arbor, seg_sb(seg)->sb_root,
		       (struct m0_btree_key *)(key != NULL ? key : &empty), cb);
	pthread_mutex_unlock(&seg->seg_lock);
	return rc;
}

/** Result of inserting into a subtree: whether its node split, the
 * separator key and the new right node. */
struct split {
	bool sp_done;
	uint32_t sp_right;
	uint32_t sp_klen;
	uint8_t sp_key[BE_KEY_MAX];
};

enum ins_mode { INS_PUT, INS_UPDATE, INS_UPSERT };

/* Stores records r[0..n) as node pgno, splitting it in two when they do not
 * fit.  The records point into a copy of the node, never into the page. */
static int node_store(struct m0_btree *arbor, struct m0_be_tx *tx,
		      uint32_t pgno, uint16_t level, uint32_t left,
		      const struct brec *r, int n, struct split *sp)
{
	struct m0_be_seg *seg = arbor->t_seg;
	size_t need = recs_size(r, n);
	size_t best = SIZE_MAX, acc, total;
	uint32_t right;
	int i, m = -1, lo, hi, rc;

	sp->sp_done = false;
	rc = tx_dirty(tx, pgno);
	if (rc != 0)
		return rc;
	if (need <= BE_NODE_SIZE) {
		node_build(seg_node(seg, pgno), pgno, level, left, r, n, tx->t_id);
		return 0;
	}
	/* Split where the bigger half is smallest.  A leaf keeps at least
	 * one record on each side; an internal node moves record m up. */
	total = need - sizeof(struct bnode_head);
	lo = 1;
	hi = level == 0 ? n - 1 : n - 2;
	for (i = 0, acc = 0; i < n; acc += rec_size(&r[i]), i++) {
		size_t rr, worst;

		if (i < lo || i > hi)
			continue;
		/* Left gets r[0..i) (acc bytes), right the rest. */
		rr = total - acc - (level == 0 ? 0 : rec_size(&r[i]));
		worst = M0_MAX(acc, rr);
		if (worst < best) {
			best = worst;
			m = i;
		}
	}
	if (m < 0 || best + sizeof(struct bnode_head) > BE_NODE_SIZE)
		return -EFBIG;
	rc = tx_page_alloc(tx, &right);
	if (rc != 0)
		return rc;
	memcpy(sp->sp_key, r[m].k, r[m].kl);
	sp->sp_klen = r[m].kl;
	sp->sp_right = right;
	sp->sp_done = true;
	if (level == 0) {
		node_build(seg_node(seg, pgno), pgno, 0, 0, r, m, tx->t_id);
		node_build(seg_node(seg, right), right, 0, 0, r + m, n - m, tx->t_id);
	} else {
		node_build(seg_node(seg, pgno), pgno, level, left, r, m, tx->t_id);
		node_build(seg_node(seg, right), right, level, rec_child(&r[m]),
			   r + m + 1, n - m - 1, tx->t_id);
	}
	M0_LOG(M0_DEBUG, "node %u split at %d of %d, new node %u", pgno, m, n, right);
	return 0;
}

static int bt_insert(struct m0_btree *arbor, struct m0_be_tx *tx, uint32_t pgno,
		     const struct m0_btree_rec *rec, enum ins_mode mode,
		     struct split *sp)
{
	struct m0_be_seg *seg = arbor->t_seg;
	struct nd nd = { seg_node(seg, pgno), pgno, arbor };
	struct m0_btree_key *key = (struct m0_btree_key *)&rec->r_key;
	struct bnode_head *copy;
	struct brec *r, nr;
	uint8_t cv[4];
	int n, idx, rc;
	bool found = false;

	sp->sp_done = false;
	if (nd.n_head->bh_level == 0) {
		struct slot s = { .s_node = &nd };

		found = bnode_find(&s, key);
		if (found && mode == INS_PUT)
			return -EEXIST;
		if (!found && mode == INS_UPDATE)
			return -ENOENT;
		idx = s.s_idx;
		nr = (struct brec){ key->k_data.b_addr, (uint32_t)key->k_data.b_nob,
				    rec->r_val.b_addr, (uint32_t)rec->r_val.b_nob };
	} else {
		struct split csp;
		int ci;
		uint32_t child = child_of(&nd, key, &ci);

		rc = bt_insert(arbor, tx, child, rec, mode, &csp);
		if (rc != 0 || !csp.sp_done)
			return rc;
		/* The child split: add (separator, right node) after it. */
		memcpy(cv, &csp.sp_right, 4);
		memcpy(sp->sp_key, csp.sp_key, csp.sp_klen);
		nr = (struct brec){ sp->sp_key, csp.sp_klen, cv, 4 };
		idx = ci + 1;
	}
	copy = malloc(BE_NODE_SIZE);
	r = malloc((REC_MAX + 1) * sizeof *r);
	if (copy == NULL || r == NULL) {
		free(copy);
		free(r);
		return -ENOMEM;
	}
	memcpy(copy, nd.n_head, BE_NODE_SIZE);
	n = node_recs(copy, r);
	if (found) {
		r[idx] = nr;
	} else {
		memmove(r + idx + 1, r + idx, (size_t)(n - idx) * sizeof *r);
		r[idx] = nr;
		n++;
	}
	/* nr may point into sp->sp_key, which node_store overwrites on a
	 * split: keep the separator in a local copy. */
	{
		struct split out;

		rc = node_store(arbor, tx, pgno, copy->bh_level, copy->bh_left,
				r, n, &out);
		*sp = out;
	}
	free(copy);
	free(r);
	return rc;
}

static int bt_check(struct m0_btree *arbor, struct m0_be_tx *tx,
		    const struct m0_btree_key *key, size_t vlen)
{
	if (tx == NULL || tx->t_state != M0_BTS_ACTIVE ||
	    arbor->t_seg->seg_tx != tx)
		return -EINVAL;
	if (key->k_data.b_nob == 0 || key->k_data.b_nob > BE_KEY_MAX ||
	    vlen > BE_VAL_MAX)
		return -E2BIG;
	return 0;
}

static int bt_put(struct m0_btree *arbor, struct m0_be_tx *tx,
		  const struct m0_btree_rec *rec, enum ins_mode mode)
{
	struct m0_be_seg *seg = arbor->t_seg;
	struct be_sb *sb;
	struct split sp;
	uint32_t root, newroot;
	uint8_t cv[4];
	struct brec r;
	int rc;

	rc = bt_check(arbor, tx, &rec->r_key, rec->r_val.b_nob);
	if (rc != 0)
		return rc;
	root = seg_sb(seg)->sb_root;
	rc = bt_insert(arbor, tx, root, rec, mode, &sp);
	if (rc != 0 || !sp.sp_done)
		return rc;
	/* The root split: grow a level. */
	rc = tx_page_alloc(tx, &newroot);
	if (rc != 0)
		return rc;
	memcpy(cv, &sp.sp_right, 4);
	r = (struct brec){ sp.sp_key, sp.sp_klen, cv, 4 };
	node_build(seg_node(seg, newroot), newroot,
		   (uint16_t)(seg_node(seg, root)->bh_level + 1), root, &r, 1,
		   tx->t_id);
	sb = seg_sb(seg);
	sb->sb_root = newroot;
	sb->sb_height++;
	M0_LOG(M0_INFO, "new root %u, height %u", newroot, sb->sb_height);
	return 0;
}

/** Inserts a record; -EEXIST if the key is present.  On errors other than
 * -EEXIST the caller must abort the transaction. */
M0_PROBE int m0_btree_put(struct m0_btree *arbor, const struct m0_btree_rec *rec,
			  struct m0_btree_cb *cb, struct m0_btree_op *op,
			  struct m0_be_tx *tx)
{
	(void)cb;
	(void)op;
	arbor->t_nr_put++;
	return bt_put(arbor, tx, rec, INS_PUT);
}

/** Replaces a record's value; -ENOENT if absent unless flags has
 * BOF_INSERT_IF_NOT_FOUND. */
M0_PROBE int m0_btree_update(struct m0_btree *arbor, const struct m0_btree_rec *rec,
			     struct m0_btree_cb *cb, uint64_t flags,
			     struct m0_btree_op *op, struct m0_be_tx *tx)
{
	(void)cb;
	(void)op;
	arbor->t_nr_put++;
	return bt_put(arbor, tx, rec, (flags & BOF_INSERT_IF_NOT_FOUND) ?
		      INS_UPSERT : INS_UPDATE);
}

/** Deletes a record; -ENOENT if absent.  Nodes are not merged: an emptied
 * leaf stays in the tree and is refilled by later inserts in its range. */
M0_PROBE int m0_btree_del(struct m0_btree *arbor, const struct m0_btree_key *key,
			  struct m0_btree_cb *cb, struct m0_btree_op *op,
			  struct m0_be_tx *tx)
{
	struct m0_be_seg *seg = arbor->t_seg;
	struct bnode_head *copy;
	struct brec *r;
	struct split sp;
	uint32_t pg;
	int n, rc;

	(void)cb;
	(void)op;
	rc = bt_check(arbor, tx, key, 0);
	if (rc != 0)
		return rc;
	arbor->t_nr_del++;
	pg = seg_sb(seg)->sb_root;
	for (;;) {
		struct nd nd = { seg_node(seg, pg), pg, arbor };
		struct slot s = { .s_node = &nd };

		if (nd.n_head->bh_level != 0) {
			pg = child_of(&nd, (struct m0_btree_key *)key, NULL);
			continue;
		}
		if (!bnode_find(&s, (struct m0_btree_key *)key))
			return -ENOENT;
		copy = malloc(BE_NODE_SIZE);
		r = malloc((REC_MAX + 1) * sizeof *r);
		if (copy == NULL || r == NULL) {
			free(copy);
			free(r);
			return -ENOMEM;
		}
		memcpy(copy, nd.n_head, BE_NODE_SIZE);
		n = node_recs(copy, r);
		memmove(r + s.s_idx, r + s.s_idx + 1,
			(size_t)(n - s.s_idx - 1) * sizeof *r);
		rc = node_store(arbor, tx, pg, 0, 0, r, n - 1, &sp);
		free(copy);
		free(r);
		return rc;
	}
}

/* --------------------------------------------------------- inspection */

/* Address of a cached node page, printed as text. */
static void addr_json(struct m0sim_sbuf *sb, const char *label, const void *p)
{
	m0sim_sb_printf(sb, "\"%s\":\"0x%" PRIxPTR "\"", label, (uintptr_t)p);
}

static const char *key_kind(const struct brec *r)
{
	if (r->kl == 0)
		return "empty";
	switch (r->k[0]) {
	case 0x01:
		return "object";
	case 0x02:
		return "cob-ns";
	case 0x03:
		return "cob-oi";
	case 0x04:
		return "cob-emap";
	default:
		return r->k[0] >= 0x20 ? "meta" : "unknown";
	}
}

static void hex_json(struct m0sim_sbuf *sb, const uint8_t *p, uint32_t n)
{
	uint32_t i;

	m0sim_sb_printf(sb, "\"");
	for (i = 0; i < n; i++)
		m0sim_sb_printf(sb, "%02x", p[i]);
	m0sim_sb_printf(sb, "\"");
}

/* True when every record of h lies inside the page. */
static bool node_sane(const struct bnode_head *h)
{
	size_t slots_end = sizeof *h + (size_t)h->bh_used * sizeof h->bh_slot[0];
	int i;

	if (h->bh_magic != BNODE_MAGIC || h->bh_used > REC_MAX ||
	    slots_end > BE_NODE_SIZE || h->bh_heap < slots_end ||
	    h->bh_heap > BE_NODE_SIZE)
		return false;
	for (i = 0; i < h->bh_used; i++) {
		uint16_t kl, vl;
		size_t off = h->bh_slot[i];

		if (off < slots_end || off + 4 > BE_NODE_SIZE)
			return false;
		memcpy(&kl, (const uint8_t *)h + off, 2);
		memcpy(&vl, (const uint8_t *)h + off + 2, 2);
		if (off + 4 + kl + vl > BE_NODE_SIZE ||
		    (h->bh_level != 0 && vl != 4))
			return false;
	}
	return true;
}

/* Child page reference: page number and the address of its cached image. */
static void child_json(struct m0sim_sbuf *sb, struct m0_be_seg *seg,
		       const char *label, uint32_t pg)
{
	m0sim_sb_printf(sb, "\"%s\":{\"page\":%u,", label, pg);
	if (pg > 0 && pg < seg_sb(seg)->sb_npages)
		addr_json(sb, "address", seg->seg_pages[pg]);
	else
		m0sim_sb_printf(sb, "\"address\":null");
	m0sim_sb_printf(sb, "}");
}

/** Prints, as JSON, the node whose cached page image contains addr.  addr
 * is only compared with the addresses of the tree's node pages, never
 * dereferenced; -ENOENT when it is not inside one, -EIO when that page
 * does not hold a well-formed node. */
M0_INTERNAL int m0_btree_node_json(struct m0_btree *arbor, uint64_t addr,
				   struct m0sim_sbuf *sb)
{
	struct m0_be_seg *seg = arbor->t_seg;
	const struct bnode_head *h = NULL;
	uint32_t pg, npages;
	int i, rc = 0;

	pthread_mutex_lock(&seg->seg_lock);
	npages = seg_sb(seg)->sb_npages;
	for (pg = 1; pg < npages && pg < seg->seg_pages_cap; pg++) {
		uintptr_t base = (uintptr_t)seg->seg_pages[pg];

		if (base != 0 && addr >= base && addr - base < BE_NODE_SIZE) {
			h = (const struct bnode_head *)(const void *)seg->seg_pages[pg];
			break;
		}
	}
	if (h == NULL) {
		rc = -ENOENT;
		goto out;
	}
	if (!node_sane(h)) {
		rc = -EIO;
		goto out;
	}
	m0sim_sb_printf(sb, "{");
	addr_json(sb, "address", h);
	m0sim_sb_printf(sb, ",\"offset\":%" PRIu64 ",\"page\":%u,\"root\":%s,"
			"\"level\":%u,\"leaf\":%s,\"records\":%u,\"lsn\":%" PRIu64
			",\"free_bytes\":%zu", addr - (uintptr_t)h, pg,
			pg == seg_sb(seg)->sb_root ? "true" : "false",
			h->bh_level, h->bh_level == 0 ? "true" : "false", h->bh_used,
			h->bh_lsn, h->bh_heap - sizeof *h -
			(size_t)h->bh_used * sizeof h->bh_slot[0]);
	if (h->bh_level != 0) {
		m0sim_sb_printf(sb, ",");
		child_json(sb, seg, "left", h->bh_left);
	}
	m0sim_sb_printf(sb, ",\"recs\":[");
	for (i = 0; i < h->bh_used; i++) {
		struct brec r;
		const char *kind;

		rec_read(h, i, &r);
		kind = key_kind(&r);
		m0sim_sb_printf(sb, "%s{\"kind\":\"%s\",\"key\":", i ? "," : "",
				kind);
		hex_json(sb, r.k, r.kl);
		if (strcmp(kind, "meta") == 0 || strcmp(kind, "object") == 0) {
			m0sim_sb_printf(sb, ",\"key_text\":");
			m0sim_sb_json_utf8(sb, r.k + (kind[0] == 'o'),
					   r.kl - (kind[0] == 'o'));
		}
		if (h->bh_level != 0) {
			m0sim_sb_printf(sb, ",");
			child_json(sb, seg, "child", rec_child(&r));
		} else {
			m0sim_sb_printf(sb, ",\"value_bytes\":%u", r.vl);
			if (strcmp(kind, "meta") == 0) {
				m0sim_sb_printf(sb, ",\"value\":");
				m0sim_sb_json_utf8(sb, r.v, r.vl);
			}
		}
		m0sim_sb_printf(sb, "}");
	}
	m0sim_sb_printf(sb, "]}");
out:
	pthread_mutex_unlock(&seg->seg_lock);
	return rc;
}

/** Address of the cached image of the root node. */
M0_INTERNAL uintptr_t m0_btree_root_addr(struct m0_btree *arbor)
{
	struct m0_be_seg *seg = arbor->t_seg;
	uintptr_t a;

	pthread_mutex_lock(&seg->seg_lock);
	a = (uintptr_t)seg->seg_pages[seg_sb(seg)->sb_root];
	pthread_mutex_unlock(&seg->seg_lock);
	return a;
}
