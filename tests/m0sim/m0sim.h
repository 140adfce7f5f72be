/* m0sim.h - common definitions of m0sim, the motr-shaped test service.
 *
 * Names, signatures and field names follow Motr (see README.md) so that probe
 * expressions resolved through DWARF work on both.  Everything that Motr
 * marks M0_INTERNAL is an ordinary global symbol here too.
 */
#ifndef M0SIM_H
#define M0SIM_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Probe points: real global functions that are never inlined, cloned or
 * changed by inter-procedural optimisation, so a uprobe on the symbol sees
 * every call with the documented arguments. */
#define M0_PROBE __attribute__((noinline, noipa))
#define M0_INTERNAL

#define M0_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define M0_MIN(a, b) ((a) < (b) ? (a) : (b))
#define M0_MAX(a, b) ((a) > (b) ? (a) : (b))
#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

typedef uint64_t m0_time_t;   /* nanoseconds */
typedef uint64_t m0_bcount_t;
typedef uint64_t m0_bindex_t;

/* ------------------------------------------------------------------ ids */

/** Client object identifier. */
struct m0_uint128 {
	uint64_t u_hi;
	uint64_t u_lo;
};

/** File identifier: top 8 bits of f_container are a type character. */
struct m0_fid {
	uint64_t f_container;
	uint64_t f_key;
};

#define FID_F "<%" PRIx64 ":%" PRIx64 ">"
#define FID_P(f) (f)->f_container, (f)->f_key

enum {
	M0_FID_TYPE_SHIFT = 56,
	M0_FID_DEVICE_ID_OFFSET = 32,
};
#define M0_FID_DEVICE_ID_MASK 0x00ffffff00000000ULL
#define M0_FID_GOB_CONTAINER_MASK 0x00000000ffffffffULL
#define M0_FID_TYPE_GOB 'G'
#define M0_FID_TYPE_COB 'C'

/** Block extent [e_start, e_end), in blocks. */
struct m0_ext {
	m0_bindex_t e_start;
	m0_bindex_t e_end;
};

struct m0_buf {
	m0_bcount_t b_nob;
	void *b_addr;
};

/** Reference count (Motr's lib/refs.h, without the release callback). */
struct m0_ref {
	int64_t ref_cnt;   /* accessed with __atomic builtins */
};

void m0_fid_gob_make(struct m0_fid *gob_fid, uint32_t container, uint64_t key);
void m0_fid_convert_gob2cob(const struct m0_fid *gob_fid,
			    struct m0_fid *cob_fid, uint32_t device_id);
void m0_fid_convert_cob2gob(const struct m0_fid *cob_fid,
			    struct m0_fid *gob_fid);
uint32_t m0_fid_cob_device_id(const struct m0_fid *cob_fid);
char m0_fid_tchar(const struct m0_fid *fid);
/** Parses "<hex:hex>" or "hex:hex" (optional 0x prefixes); 0 or -EINVAL. */
int m0_fid_sscanf(const char *s, struct m0_fid *fid);

/* Name -> object id (see README.md "Object names and ids"). */
#define M0SIM_FNV_PRIME 0x00000100000001b3ULL
#define M0SIM_ID_LO_BASIS 0xcbf29ce484222325ULL /* standard FNV-1a 64 basis */
#define M0SIM_ID_HI_BASIS 0x84222325cbf29ce4ULL /* its two 32-bit halves swapped */
uint64_t m0sim_fnv1a64(uint64_t basis, const void *data, size_t len);
void m0sim_name_to_id(const char *name, size_t len, struct m0_uint128 *id);
void m0sim_name_to_fid(const char *name, size_t len, struct m0_fid *gob);

/** CRC-32 (IEEE 802.3, same as zlib's crc32(); pass 0 to start). */
uint32_t m0sim_crc32(uint32_t crc, const void *data, size_t len);

m0_time_t m0_time_now(void);   /* CLOCK_MONOTONIC */

/* -------------------------------------------------------------- memory */

void *m0_alloc(size_t size);
void *m0_alloc_nz(size_t size);
void m0_free(void *data);
void *m0_alloc_aligned(size_t size, unsigned shift);
void m0_free_aligned(void *data, size_t size, unsigned shift);

/** Allocation accounting: bytes is exactly the sum of the sizes passed to
 * m0_alloc/m0_alloc_nz/m0_alloc_aligned of the blocks still alive. */
struct m0sim_mem_stats {
	uint64_t ms_bytes;
	uint64_t ms_allocs;
	uint64_t ms_frees;
};
void m0sim_mem_stats(struct m0sim_mem_stats *out);

/* ----------------------------------------------------------- lists */

/* Motr's lib/list.h layout: a list head has the same shape as a link, and
 * the list is circular through the head (the last link's ll_next is the
 * address of the head).  The helpers below never access the head through
 * a link pointer, so there is no type punning. */
struct m0_list_link {
	struct m0_list_link *ll_next;
	struct m0_list_link *ll_prev;
};
struct m0_list {
	struct m0_list_link *l_head;
	struct m0_list_link *l_tail;
};
struct m0_tl {
	uint64_t t_magic;   /* the descriptor's td_head_magic (0: unchecked) */
	struct m0_list t_head;
};

/** Motr's tlist descriptor (lib/tlist.h): where the link and the magic
 * sit in the container, and the magics a walker checks. */
struct m0_tl_descr {
	const char *td_name;
	int td_link_offset;
	int td_link_magic_offset;
	uint64_t td_link_magic;
	uint64_t td_head_magic;
	size_t td_container_size;
};
struct m0_tlink {
	struct m0_list_link t_link;
};

static inline struct m0_list_link *m0_tl_sentinel(struct m0_tl *tl)
{
	return (struct m0_list_link *)(void *)&tl->t_head;
}

static inline void m0_tl_init(struct m0_tl *tl)
{
	tl->t_head.l_head = tl->t_head.l_tail = m0_tl_sentinel(tl);
}

static inline bool m0_tl_is_empty(struct m0_tl *tl)
{
	return tl->t_head.l_head == m0_tl_sentinel(tl);
}

static inline void m0_tl_add_tail(struct m0_tl *tl, struct m0_tlink *tlink)
{
	struct m0_list_link *s = m0_tl_sentinel(tl);
	struct m0_list_link *l = &tlink->t_link;

	l->ll_next = s;
	l->ll_prev = tl->t_head.l_tail;
	if (tl->t_head.l_tail == s)
		tl->t_head.l_head = l;
	else
		tl->t_head.l_tail->ll_next = l;
	tl->t_head.l_tail = l;
}

static inline void m0_tl_del(struct m0_tl *tl, struct m0_tlink *tlink)
{
	struct m0_list_link *s = m0_tl_sentinel(tl);
	struct m0_list_link *l = &tlink->t_link;

	if (l->ll_prev == s)
		tl->t_head.l_head = l->ll_next;
	else
		l->ll_prev->ll_next = l->ll_next;
	if (l->ll_next == s)
		tl->t_head.l_tail = l->ll_prev;
	else
		l->ll_next->ll_prev = l->ll_prev;
	l->ll_next = l->ll_prev = NULL;
}

/** First link, or NULL. */
static inline struct m0_tlink *m0_tl_head(struct m0_tl *tl)
{
	return m0_tl_is_empty(tl) ? NULL :
		container_of(tl->t_head.l_head, struct m0_tlink, t_link);
}

/** Link after @tlink, or NULL. */
static inline struct m0_tlink *m0_tl_next(struct m0_tl *tl,
					  struct m0_tlink *tlink)
{
	struct m0_list_link *n = tlink->t_link.ll_next;
	return n == m0_tl_sentinel(tl) ? NULL :
		container_of(n, struct m0_tlink, t_link);
}

/* ------------------------------------------------------------ tracing */

/** Motr's trace levels (lib/trace.h). */
enum m0_trace_level {
	M0_NONE = 0,
	M0_NOTICE = 1 << 0,
	M0_WARN = 1 << 1,
	M0_ERROR = 1 << 2,
	M0_FATAL = 1 << 3,
	M0_DEBUG = 1 << 4,
	M0_INFO = 1 << 5,
	M0_CALL = 1 << 6,
	M0_ALWAYS = 1 << 7,
};

enum m0_trace_subsystem {
	M0_TRACE_SUBSYS_OTHER = 1 << 0,
	M0_TRACE_SUBSYS_LIB = 1 << 1,
	M0_TRACE_SUBSYS_RPC = 1 << 2,
	M0_TRACE_SUBSYS_REQH = 1 << 3,
	M0_TRACE_SUBSYS_BE = 1 << 4,
	M0_TRACE_SUBSYS_COB = 1 << 5,
	M0_TRACE_SUBSYS_BALLOC = 1 << 6,
	M0_TRACE_SUBSYS_IOSERVICE = 1 << 7,
	M0_TRACE_SUBSYS_CLIENT = 1 << 8,
};

/** Static descriptor of one trace point.  The body passed to
 * m0_trace_allot() holds td_nr arguments; argument i is td_sizeof[i] bytes
 * at td_offset[i]; td_isstr[i] says it is a `char *` whose string is in the
 * process memory.  In m0sim every argument is 8 bytes (integers widened,
 * pointers as addresses). */
struct m0_trace_descr {
	uint64_t td_magic;
	const char *td_fmt;
	const char *td_func;
	const char *td_file;
	uint64_t td_subsys;
	int td_line;
	int td_size;
	int td_nr;
	const int *td_offset;
	const int *td_sizeof;
	const bool *td_isstr;
	enum m0_trace_level td_level;
};

#define M0_TRACE_DESCR_MAGIC 0xd15ea5e0d15ea5e0ULL
#define M0_TRACE_ARGS_MAX 8

extern const int m0_trace_arg_offset[M0_TRACE_ARGS_MAX];
extern const int m0_trace_arg_sizeof[M0_TRACE_ARGS_MAX];
extern int m0sim_trace_print;   /* print trace records to stderr */

void m0_trace_allot(const struct m0_trace_descr *td, const void *body);
/** Formats one record as the printf of td_fmt would. */
int m0_trace_format(const struct m0_trace_descr *td, const void *body,
		    char *out, size_t len);

#ifndef M0_TRACE_SUBSYSTEM
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_OTHER
#endif

#define M0__CAT_(a, b) a##b
#define M0__CAT(a, b) M0__CAT_(a, b)
#define M0__NARG(...) M0__NARG_(__VA_ARGS__, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define M0__NARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, N, ...) N
#define M0__U64(x) ((uint64_t)(uintptr_t)(x))
#define M0__ISSTR(x) _Generic((x), char *: true, const char *: true, default: false)
#define M0__MAP1(m, a) m(a)
#define M0__MAP2(m, a, ...) m(a), M0__MAP1(m, __VA_ARGS__)
#define M0__MAP3(m, a, ...) m(a), M0__MAP2(m, __VA_ARGS__)
#define M0__MAP4(m, a, ...) m(a), M0__MAP3(m, __VA_ARGS__)
#define M0__MAP5(m, a, ...) m(a), M0__MAP4(m, __VA_ARGS__)
#define M0__MAP6(m, a, ...) m(a), M0__MAP5(m, __VA_ARGS__)
#define M0__MAP7(m, a, ...) m(a), M0__MAP6(m, __VA_ARGS__)
#define M0__MAP8(m, a, ...) m(a), M0__MAP7(m, __VA_ARGS__)

#define M0__TD(lvl, fmt, nr, isstr) {                                    \
	.td_magic = M0_TRACE_DESCR_MAGIC, .td_fmt = (fmt),               \
	.td_func = __func__, .td_file = __FILE__,                        \
	.td_subsys = M0_TRACE_SUBSYSTEM, .td_line = __LINE__,            \
	.td_size = (nr) * 8, .td_nr = (nr),                              \
	.td_offset = m0_trace_arg_offset, .td_sizeof = m0_trace_arg_sizeof, \
	.td_isstr = (isstr), .td_level = (lvl) }

#define M0__LOG1(lvl, fmt) do {                                          \
	static const struct m0_trace_descr __td = M0__TD(lvl, fmt, 0, NULL); \
	m0_trace_allot(&__td, NULL);                                     \
} while (0)
#define M0__LOGN(lvl, fmt, nr, ...) do {                                 \
	static const bool __isstr[] = {                                  \
		M0__CAT(M0__MAP, nr)(M0__ISSTR, __VA_ARGS__) };          \
	static const struct m0_trace_descr __td =                       \
		M0__TD(lvl, fmt, nr, __isstr);                           \
	const uint64_t __body[] = {                                      \
		M0__CAT(M0__MAP, nr)(M0__U64, __VA_ARGS__) };            \
	m0_trace_allot(&__td, __body);                                   \
} while (0)
#define M0__LOG2(lvl, fmt, ...) M0__LOGN(lvl, fmt, 1, __VA_ARGS__)
#define M0__LOG3(lvl, fmt, ...) M0__LOGN(lvl, fmt, 2, __VA_ARGS__)
#define M0__LOG4(lvl, fmt, ...) M0__LOGN(lvl, fmt, 3, __VA_ARGS__)
#define M0__LOG5(lvl, fmt, ...) M0__LOGN(lvl, fmt, 4, __VA_ARGS__)
#define M0__LOG6(lvl, fmt, ...) M0__LOGN(lvl, fmt, 5, __VA_ARGS__)
#define M0__LOG7(lvl, fmt, ...) M0__LOGN(lvl, fmt, 6, __VA_ARGS__)
#define M0__LOG8(lvl, fmt, ...) M0__LOGN(lvl, fmt, 7, __VA_ARGS__)
#define M0__LOG9(lvl, fmt, ...) M0__LOGN(lvl, fmt, 8, __VA_ARGS__)

/** M0_LOG(level, fmt, args...): a trace point with a static descriptor.
 * Arguments must be integers or pointers (at most 8). */
#define M0_LOG(lvl, ...) M0__CAT(M0__LOG, M0__NARG(__VA_ARGS__))(lvl, __VA_ARGS__)

/* --------------------------------------------------------------- addb2 */

/** ADDB2 measurement identifiers used by m0sim (Motr's addb2/identifier.h
 * has the real ones; these live in a private range). */
enum m0_addb2_value_id {
	M0_AVI_M0SIM_BASE = 0x10000,
	M0_AVI_FOM_REQ,        /* opcode, latency ns, rc, locality */
	M0_AVI_LOC_QUEUE,      /* locality, run queue length */
	M0_AVI_STOB_IO,        /* device, opcode, bytes, latency ns */
	M0_AVI_BE_TX,          /* lsn, pages, wal bytes, latency ns */
	M0_AVI_RPC_ITEM,       /* opcode, xid, size */
};

void m0_addb2_add(uint64_t id, int n, const uint64_t *value);

/* ------------------------------------------------------ string builder */

/** Append-only text buffer with snprintf semantics: sb_len counts every
 * byte appended even past sb_cap, so a caller can retry with a larger
 * buffer; the text is always NUL-terminated within sb_cap. */
struct m0sim_sbuf {
	char *sb_buf;
	size_t sb_cap;
	size_t sb_len;
};

void m0sim_sb_init(struct m0sim_sbuf *sb, char *buf, size_t cap);
void m0sim_sb_printf(struct m0sim_sbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/** Appends a JSON string literal (with quotes) of len bytes. */
void m0sim_sb_json_str(struct m0sim_sbuf *sb, const void *s, size_t len);
/** Like m0sim_sb_json_str, but valid UTF-8 sequences are kept as they are
 * (other bytes >= 0x7f are escaped as \u00XX). */
void m0sim_sb_json_utf8(struct m0sim_sbuf *sb, const void *s, size_t len);
void m0sim_sb_fid(struct m0sim_sbuf *sb, const struct m0_fid *fid);

#endif /* M0SIM_H */
