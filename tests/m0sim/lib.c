/* lib.c - memory allocation with accounting, the trace and ADDB2 rings,
 * fids, hashes and small helpers shared by m0d and m0client. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_LIB
#include "m0sim.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -------------------------------------------------------------- memory */

/* Live bytes, calls and frees.  Plain globals updated with atomic builtins
 * so that an outside tool can read them by symbol. */
uint64_t m0sim_mem_bytes;
uint64_t m0sim_mem_allocs;
uint64_t m0sim_mem_frees;

/* m0_alloc() blocks carry their size in a header, because m0_free() is not
 * told the size. */
struct alloc_hdr {
	uint64_t ah_size;
	uint64_t ah_magic;
};
#define ALLOC_MAGIC 0x6d30616c6c6f6321ULL /* "m0alloc!" */

static void mem_account(size_t size)
{
	__atomic_add_fetch(&m0sim_mem_bytes, size, __ATOMIC_RELAXED);
	__atomic_add_fetch(&m0sim_mem_allocs, 1, __ATOMIC_RELAXED);
}

static void mem_unaccount(size_t size)
{
	__atomic_sub_fetch(&m0sim_mem_bytes, size, __ATOMIC_RELAXED);
	__atomic_add_fetch(&m0sim_mem_frees, 1, __ATOMIC_RELAXED);
}

static void *alloc_hdr(size_t size, bool zero)
{
	struct alloc_hdr *h;

	if (size > SIZE_MAX - sizeof *h)
		return NULL;
	h = zero ? calloc(1, sizeof *h + size) : malloc(sizeof *h + size);
	if (h == NULL)
		return NULL;
	h->ah_size = size;
	h->ah_magic = ALLOC_MAGIC;
	mem_account(size);
	return h + 1;
}

/** Zeroed allocation, as Motr's m0_alloc(). */
M0_PROBE void *m0_alloc(size_t size)
{
	return alloc_hdr(size, true);
}

/** Allocation without zeroing. */
M0_PROBE void *m0_alloc_nz(size_t size)
{
	return alloc_hdr(size, false);
}

M0_PROBE void m0_free(void *data)
{
	struct alloc_hdr *h;

	if (data == NULL)
		return;
	h = (struct alloc_hdr *)data - 1;
	if (h->ah_magic != ALLOC_MAGIC) {
		fprintf(stderr, "m0_free: bad block %p\n", data);
		abort();
	}
	h->ah_magic = 0;
	mem_unaccount(h->ah_size);
	free(h);
}

/** Zeroed allocation aligned to 2^shift bytes. */
M0_PROBE void *m0_alloc_aligned(size_t size, unsigned shift)
{
	size_t align = shift >= 63 ? 0 : (size_t)1 << shift;
	void *p = NULL;

	if (align < sizeof(void *))
		align = sizeof(void *);
	if (posix_memalign(&p, align, size ? size : 1) != 0)
		return NULL;
	memset(p, 0, size);
	mem_account(size);
	return p;
}

M0_PROBE void m0_free_aligned(void *data, size_t size, unsigned shift)
{
	(void)shift;
	if (data == NULL)
		return;
	mem_unaccount(size);
	free(data);
}

void m0sim_mem_stats(struct m0sim_mem_stats *out)
{
	out->ms_bytes = __atomic_load_n(&m0sim_mem_bytes, __ATOMIC_RELAXED);
	out->ms_allocs = __atomic_load_n(&m0sim_mem_allocs, __ATOMIC_RELAXED);
	out->ms_frees = __atomic_load_n(&m0sim_mem_frees, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- time */

m0_time_t m0_time_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (m0_time_t)ts.tv_sec * 1000000000ULL + (m0_time_t)ts.tv_nsec;
}

/* ------------------------------------------------------------- tracing */

const int m0_trace_arg_offset[M0_TRACE_ARGS_MAX] = { 0, 8, 16, 24, 32, 40, 48, 56 };
const int m0_trace_arg_sizeof[M0_TRACE_ARGS_MAX] = { 8, 8, 8, 8, 8, 8, 8, 8 };
int m0sim_trace_print;

/** One record of the in-memory trace ring. */
struct m0_trace_rec {
	uint64_t trr_seq;
	m0_time_t trr_time;
	const struct m0_trace_descr *trr_descr;
	uint64_t trr_body[M0_TRACE_ARGS_MAX];
};

enum { TRACE_RING_NR = 4096, ADDB2_RING_NR = 4096 };

static struct m0_trace_rec m0_trace_ring[TRACE_RING_NR];
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t m0sim_trace_nr;   /* records written (written under trace_lock) */

/** Records one trace point: the descriptor and the packed arguments go into
 * the ring.  This is the function to put a uprobe on. */
M0_PROBE void m0_trace_allot(const struct m0_trace_descr *td, const void *body)
{
	struct m0_trace_rec *r;
	size_t n = td->td_size > 0 ? (size_t)td->td_size : 0;

	if (n > sizeof r->trr_body)
		n = sizeof r->trr_body;
	pthread_mutex_lock(&trace_lock);
	r = &m0_trace_ring[m0sim_trace_nr % TRACE_RING_NR];
	r->trr_seq = m0sim_trace_nr;
	/* Atomic because stats read it without the lock. */
	__atomic_store_n(&m0sim_trace_nr, r->trr_seq + 1, __ATOMIC_RELAXED);
	r->trr_time = m0_time_now();
	r->trr_descr = td;
	memset(r->trr_body, 0, sizeof r->trr_body);
	if (n > 0 && body != NULL)
		memcpy(r->trr_body, body, n);
	pthread_mutex_unlock(&trace_lock);

	if (m0sim_trace_print) {
		char line[512];

		m0_trace_format(td, body, line, sizeof line);
		fprintf(stderr, "trace %s:%d %s: %s\n", td->td_file, td->td_line,
			td->td_func, line);
	}
}

/* printf of one conversion with the 8-byte argument v. */
static int format_one(char *out, size_t len, const char *spec, size_t slen,
		      uint64_t v)
{
	char conv = spec[slen - 1];
	char fmt[32];
	size_t i, k = 0;

	/* Keep flags, width and precision; drop length modifiers and use
	 * the widest type for the conversion. */
	for (i = 0; i < slen - 1 && k < sizeof fmt - 4; i++) {
		if (strchr("hlLqjzt", spec[i]) == NULL)
			fmt[k++] = spec[i];
	}
	switch (conv) {
	case 's':
		fmt[k++] = 's';
		fmt[k] = 0;
		return snprintf(out, len, fmt, v ? (const char *)(uintptr_t)v : "(null)");
	case 'p':
		fmt[k++] = 'p';
		fmt[k] = 0;
		return snprintf(out, len, fmt, (void *)(uintptr_t)v);
	case 'c':
		fmt[k++] = 'c';
		fmt[k] = 0;
		return snprintf(out, len, fmt, (int)v);
	case 'd':
	case 'i':
		fmt[k++] = 'l';
		fmt[k++] = 'l';
		fmt[k++] = conv;
		fmt[k] = 0;
		return snprintf(out, len, fmt, (long long)v);
	default:
		fmt[k++] = 'l';
		fmt[k++] = 'l';
		fmt[k++] = conv;
		fmt[k] = 0;
		return snprintf(out, len, fmt, (unsigned long long)v);
	}
}

int m0_trace_format(const struct m0_trace_descr *td, const void *body,
		    char *out, size_t len)
{
	const char *f = td->td_fmt;
	const uint64_t *args = body;
	size_t o = 0;
	int argi = 0;

	if (len == 0)
		return 0;
	while (*f != 0 && o + 1 < len) {
		if (*f != '%') {
			out[o++] = *f++;
			continue;
		}
		if (f[1] == '%') {
			out[o++] = '%';
			f += 2;
			continue;
		}
		{
			const char *s = f + 1;
			int n;

			while (*s != 0 && strchr("diouxXcspf", *s) == NULL)
				s++;
			if (*s == 0)
				break;
			n = format_one(out + o, len - o, f, (size_t)(s - f + 1),
				       argi < td->td_nr && args != NULL ? args[argi] : 0);
			argi++;
			if (n > 0)
				o += M0_MIN((size_t)n, len - o - 1);
			f = s + 1;
		}
	}
	out[o] = 0;
	return (int)o;
}

/* --------------------------------------------------------------- addb2 */

struct m0_addb2_rec {
	m0_time_t ar_time;
	uint64_t ar_id;
	int ar_nr;
	uint64_t ar_val[8];
};

static struct m0_addb2_rec m0_addb2_ring[ADDB2_RING_NR];
static pthread_mutex_t addb2_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t m0sim_addb2_nr;

/** Adds one ADDB2 measurement: identifier and n 64-bit values. */
M0_PROBE void m0_addb2_add(uint64_t id, int n, const uint64_t *value)
{
	struct m0_addb2_rec *r;

	if (n < 0)
		n = 0;
	if (n > 8)
		n = 8;
	pthread_mutex_lock(&addb2_lock);
	r = &m0_addb2_ring[m0sim_addb2_nr % ADDB2_RING_NR];
	__atomic_store_n(&m0sim_addb2_nr, m0sim_addb2_nr + 1, __ATOMIC_RELAXED);
	r->ar_time = m0_time_now();
	r->ar_id = id;
	r->ar_nr = n;
	memset(r->ar_val, 0, sizeof r->ar_val);
	if (n > 0)
		memcpy(r->ar_val, value, (size_t)n * sizeof *value);
	pthread_mutex_unlock(&addb2_lock);
}

/* ---------------------------------------------------------------- fids */

static void fid_tset(struct m0_fid *fid, uint8_t type, uint64_t container,
		     uint64_t key)
{
	fid->f_container = ((uint64_t)type << M0_FID_TYPE_SHIFT) |
		(container & ~(0xffULL << M0_FID_TYPE_SHIFT));
	fid->f_key = key;
}

/** Global object fid: type 'G', the 32-bit container, the key. */
M0_PROBE void m0_fid_gob_make(struct m0_fid *gob_fid, uint32_t container,
			      uint64_t key)
{
	fid_tset(gob_fid, M0_FID_TYPE_GOB, container, key);
}

/** Cob fid of a global object on a device: type 'C', the 24-bit device id
 * at bit 32 of f_container, the gob's 32-bit container below it. */
M0_PROBE void m0_fid_convert_gob2cob(const struct m0_fid *gob_fid,
				     struct m0_fid *cob_fid, uint32_t device_id)
{
	fid_tset(cob_fid, M0_FID_TYPE_COB,
		 (((uint64_t)device_id << M0_FID_DEVICE_ID_OFFSET) &
		  M0_FID_DEVICE_ID_MASK) |
		 (gob_fid->f_container & M0_FID_GOB_CONTAINER_MASK),
		 gob_fid->f_key);
}

void m0_fid_convert_cob2gob(const struct m0_fid *cob_fid, struct m0_fid *gob_fid)
{
	fid_tset(gob_fid, M0_FID_TYPE_GOB,
		 cob_fid->f_container & M0_FID_GOB_CONTAINER_MASK,
		 cob_fid->f_key);
}

uint32_t m0_fid_cob_device_id(const struct m0_fid *cob_fid)
{
	return (uint32_t)((cob_fid->f_container & M0_FID_DEVICE_ID_MASK) >>
			  M0_FID_DEVICE_ID_OFFSET);
}

char m0_fid_tchar(const struct m0_fid *fid)
{
	return (char)(fid->f_container >> M0_FID_TYPE_SHIFT);
}

int m0_fid_sscanf(const char *s, struct m0_fid *fid)
{
	unsigned long long c, k;
	char *end;

	while (*s == ' ')
		s++;
	if (*s == '<')
		s++;
	errno = 0;
	c = strtoull(s, &end, 16);
	if (end == s || *end != ':' || errno != 0)
		return -EINVAL;
	s = end + 1;
	k = strtoull(s, &end, 16);
	if (end == s || errno != 0)
		return -EINVAL;
	if (*end == '>')
		end++;
	while (*end == ' ')
		end++;
	if (*end != 0)
		return -EINVAL;
	fid->f_container = c;
	fid->f_key = k;
	return 0;
}

/* -------------------------------------------------------------- hashes */

uint64_t m0sim_fnv1a64(uint64_t basis, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = basis;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= M0SIM_FNV_PRIME;
	}
	return h;
}

/** Object id of a name: u_hi and u_lo are FNV-1a 64 of the name bytes with
 * two different offset bases. */
void m0sim_name_to_id(const char *name, size_t len, struct m0_uint128 *id)
{
	id->u_hi = m0sim_fnv1a64(M0SIM_ID_HI_BASIS, name, len);
	id->u_lo = m0sim_fnv1a64(M0SIM_ID_LO_BASIS, name, len);
}

/** Global object fid of a name: m0_fid_gob_make(fid, (uint32_t)u_hi, u_lo),
 * as Motr's client does with an object id. */
void m0sim_name_to_fid(const char *name, size_t len, struct m0_fid *gob)
{
	struct m0_uint128 id;

	m0sim_name_to_id(name, len, &id);
	m0_fid_gob_make(gob, (uint32_t)id.u_hi, id.u_lo);
}

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c & 1) ? 0xedb88320U ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t m0sim_crc32(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	for (i = 0; i < len; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ------------------------------------------------------ string builder */

void m0sim_sb_init(struct m0sim_sbuf *sb, char *buf, size_t cap)
{
	sb->sb_buf = buf;
	sb->sb_cap = cap;
	sb->sb_len = 0;
	if (cap > 0)
		buf[0] = 0;
}

void m0sim_sb_printf(struct m0sim_sbuf *sb, const char *fmt, ...)
{
	va_list ap;
	size_t room = sb->sb_len < sb->sb_cap ? sb->sb_cap - sb->sb_len : 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(room ? sb->sb_buf + sb->sb_len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		sb->sb_len += (size_t)n;
}

void m0sim_sb_json_str(struct m0sim_sbuf *sb, const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i;

	m0sim_sb_printf(sb, "\"");
	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (c == '"' || c == '\\')
			m0sim_sb_printf(sb, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			m0sim_sb_printf(sb, "\\u%04x", c);
		else
			m0sim_sb_printf(sb, "%c", c);
	}
	m0sim_sb_printf(sb, "\"");
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned cp;
	size_t k, i;

	if (p[0] < 0xc2 || p[0] > 0xf4)
		return 0;
	k = p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
	if (k > n)
		return 0;
	cp = p[0] & (0x7f >> k);
	for (i = 1; i < k; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((k == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
	    (k == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return k;
}

void m0sim_sb_json_utf8(struct m0sim_sbuf *sb, const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i = 0;

	m0sim_sb_printf(sb, "\"");
	while (i < len) {
		unsigned char c = p[i];
		size_t k = c >= 0x80 ? utf8_seq(p + i, len - i) : 0;

		if (k > 0) {
			m0sim_sb_printf(sb, "%.*s", (int)k, (const char *)p + i);
			i += k;
			continue;
		}
		if (c == '"' || c == '\\')
			m0sim_sb_printf(sb, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			m0sim_sb_printf(sb, "\\u%04x", c);
		else
			m0sim_sb_printf(sb, "%c", c);
		i++;
	}
	m0sim_sb_printf(sb, "\"");
}

void m0sim_sb_fid(struct m0sim_sbuf *sb, const struct m0_fid *fid)
{
	m0sim_sb_printf(sb, "\"" FID_F "\"", FID_P(fid));
}
