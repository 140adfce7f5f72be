/* control.c - m0d's control socket: the ri-control library serving the
 * control API of m0sim_ctl.h as commands, plus report sections and the
 * SIGUSR2 report.
 *
 * Built with -DM0SIM_CONTROL and linked with libri_control.a when
 * build.sh is given RI_CONTROL_LIB and RI_CONTROL_INCLUDE; otherwise
 * m0sim_control_start() only says that control is not built in.
 *
 * Handlers run on the library's threads.  The library has already checked
 * the arguments against the schemas below, so the small JSON reader here
 * only has to find top-level members of a flat object. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_OTHER
#include "reqh.h"
#include "m0sim_ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M0SIM_CONTROL

int m0sim_control_start(const struct m0sim_control_cfg *cfg, char *err,
			size_t errlen)
{
	(void)cfg;
	snprintf(err, errlen, "m0d was built without ri-control");
	return -ENOTSUP;
}

const char *m0sim_control_socket(void)
{
	return NULL;
}

void m0sim_control_stop(void)
{
}

#else /* M0SIM_CONTROL */

#include "ri_control.h"

#define M0SIM_VERSION "0.1.0"

enum {
	/* Handler output buffer: a full B-tree node listing fits. */
	CONTROL_OUT_MAX = 512 << 10,
	CONTROL_STR_MAX = 4096,
};

static struct ri_ctl *control;
static char *control_config;   /* JSON of the flags, built at start */

/* ------------------------------------------------------------ JSON args */

static const char *json_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	*out = v;
	return 0;
}

/* Appends code point cp as UTF-8. */
static int put_utf8(char *out, size_t cap, size_t *n, unsigned cp)
{
	char b[4];
	size_t k, i;

	if (cp < 0x80) {
		b[0] = (char)cp;
		k = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (*n + k >= cap)
		return -E2BIG;
	for (i = 0; i < k; i++)
		out[(*n)++] = b[i];
	return 0;
}

/* Decodes the JSON string at p (at its opening quote) into out (NUL
 * terminated; a \u0000 is refused).  out may be NULL to only skip it.
 * Returns the position after the closing quote, or NULL. */
static const char *json_str(const char *p, char *out, size_t cap, int *rc)
{
	size_t n = 0;

	*rc = 0;
	if (*p++ != '"')
		goto bad;
	while (*p != '"') {
		unsigned cp;

		if (*p == 0)
			goto bad;
		if (*p != '\\') {
			if (out != NULL) {
				if (n + 1 >= cap) {
					*rc = -E2BIG;
					return NULL;
				}
				out[n++] = *p;
			}
			p++;
			continue;
		}
		p++;
		switch (*p) {
		case '"': cp = '"'; break;
		case '\\': cp = '\\'; break;
		case '/': cp = '/'; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (hex4(p + 1, &cp) != 0)
				goto bad;
			p += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				unsigned lo;

				if (p[1] != '\\' || p[2] != 'u' || hex4(p + 3, &lo) != 0 ||
				    lo < 0xdc00 || lo >= 0xe000)
					goto bad;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				goto bad;
			}
			if (cp == 0)
				goto bad;
			break;
		default:
			goto bad;
		}
		p++;
		if (out != NULL) {
			*rc = put_utf8(out, cap, &n, cp);
			if (*rc != 0)
				return NULL;
		}
	}
	if (out != NULL)
		out[n] = 0;
	return p + 1;
bad:
	*rc = -EINVAL;
	return NULL;
}

/* Skips one JSON value; NULL when malformed. */
static const char *json_skip(const char *p)
{
	int depth = 0, rc;

	do {
		p = json_ws(p);
		if (*p == '"') {
			p = json_str(p, NULL, 0, &rc);
			if (p == NULL)
				return NULL;
		} else if (*p == '{' || *p == '[') {
			depth++;
			p++;
		} else if (*p == '}' || *p == ']') {
			if (depth == 0)
				return NULL;
			depth--;
			p++;
		} else if (*p == ',' || *p == ':') {
			if (depth == 0)
				return NULL;
			p++;
		} else if (*p == 0) {
			return NULL;
		} else {
			while (*p != 0 && strchr(",:{}[]\" \t\r\n", *p) == NULL)
				p++;
		}
	} while (depth > 0);
	return p;
}

/* Position of the value of top-level member key of object obj, or NULL. */
static const char *json_member(const char *obj, const char *key)
{
	const char *p = json_ws(obj);
	char name[64];
	int rc;

	if (*p++ != '{')
		return NULL;
	for (;;) {
		p = json_ws(p);
		if (*p != '"')
			return NULL;
		/* A name longer than ours cannot match: it reads as "". */
		if (json_str(p, name, sizeof name, &rc) == NULL)
			name[0] = 0;
		p = json_str(p, NULL, 0, &rc);
		if (p == NULL)
			return NULL;
		p = json_ws(p);
		if (*p++ != ':')
			return NULL;
		p = json_ws(p);
		if (strcmp(name, key) == 0)
			return p;
		p = json_skip(p);
		if (p == NULL)
			return NULL;
		p = json_ws(p);
		if (*p != ',')
			return NULL;
		p++;
	}
}

/* String member key of args into out; 0 or -errno. */
static int arg_str(const char *args, const char *key, char *out, size_t cap)
{
	const char *p = json_member(args, key);
	int rc;

	if (p == NULL || *p != '"')
		return -EINVAL;
	return json_str(p, out, cap, &rc) == NULL ? rc : 0;
}

/* Unsigned integer (or, when allow_str, a string "0x..." or decimal). */
static int arg_u64(const char *args, const char *key, bool allow_str,
		   uint64_t *v)
{
	const char *p = json_member(args, key);
	char buf[64], *end;
	const char *s = buf;
	int rc;

	if (p == NULL)
		return -EINVAL;
	if (*p == '"') {
		if (!allow_str)
			return -EINVAL;
		rc = arg_str(args, key, buf, sizeof buf);
		if (rc != 0)
			return rc;
	} else {
		size_t n = 0;

		while (p[n] >= '0' && p[n] <= '9' && n + 1 < sizeof buf) {
			buf[n] = p[n];
			n++;
		}
		buf[n] = 0;
		if (n == 0 || (p[n] >= '0' && p[n] <= '9') || p[n] == '.' ||
		    p[n] == 'e' || p[n] == 'E')
			return -EINVAL;
	}
	while (*s == ' ')
		s++;
	if (*s == '-' || *s == '+' || *s == 0)
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 0);
	if (errno != 0 || *end != 0)
		return -EINVAL;
	return 0;
}

/* ------------------------------------------------------------- handlers */

static int fail(char *out, size_t cap, const char *what, int rc)
{
	snprintf(out, cap, "%s: %s", what, strerror(-rc));
	return 1;
}

/* Turns the length returned by a JSON function into a handler result. */
static int json_out(int n, char *out, size_t cap, const char *what)
{
	if (n < 0) {
		memset(out, 0, cap);
		return fail(out, cap, what, n);
	}
	if ((size_t)n >= cap) {
		snprintf(out, cap, "%s: output too large (%d bytes)", what, n);
		return 1;
	}
	return 0;
}

static int h_pause(void *u, const char *args, const struct ri_ctl_peer *peer,
		   char *out, size_t cap)
{
	int rc = m0sim_reqh_pause();

	(void)u, (void)args, (void)peer;
	if (rc != 0)
		return fail(out, cap, "reqh.pause", rc);
	snprintf(out, cap, "{\"paused\":true}");
	return 0;
}

static int h_resume(void *u, const char *args, const struct ri_ctl_peer *peer,
		    char *out, size_t cap)
{
	int rc = m0sim_reqh_resume();

	(void)u, (void)args, (void)peer;
	if (rc != 0)
		return fail(out, cap, "reqh.resume", rc);
	snprintf(out, cap, "{\"paused\":false}");
	return 0;
}

static int h_session_reset(void *u, const char *args,
			   const struct ri_ctl_peer *peer, char *out, size_t cap)
{
	uint64_t sid;
	int rc;

	(void)u, (void)peer;
	if (arg_u64(args, "session_id", false, &sid) != 0) {
		snprintf(out, cap, "session_id must be an unsigned integer");
		return 1;
	}
	rc = m0sim_session_reset(sid);
	if (rc == -ENOENT) {
		snprintf(out, cap, "no open session %" PRIu64, sid);
		return 1;
	}
	if (rc != 0)
		return fail(out, cap, "session.reset", rc);
	snprintf(out, cap, "{\"session_id\":%" PRIu64 ",\"reset\":true}", sid);
	return 0;
}

static int h_meta_update(void *u, const char *args,
			 const struct ri_ctl_peer *peer, char *out, size_t cap)
{
	char *key = calloc(1, CONTROL_STR_MAX), *val = calloc(1, CONTROL_STR_MAX);
	char *old = calloc(1, CONTROL_STR_MAX);
	struct m0sim_sbuf sb;
	int rc, orc = -ENOENT;

	(void)u, (void)peer;
	if (key == NULL || val == NULL || old == NULL) {
		rc = fail(out, cap, "meta.update", -ENOMEM);
		goto out;
	}
	if (arg_str(args, "key", key, CONTROL_STR_MAX) != 0 ||
	    arg_str(args, "value", val, CONTROL_STR_MAX) != 0) {
		snprintf(out, cap, "key and value must be strings without NUL "
			 "(key 1-255 bytes, value at most 2048)");
		rc = 1;
		goto out;
	}
	orc = m0sim_meta_get(key, old, CONTROL_STR_MAX);
	rc = m0sim_meta_update(key, val);
	if (rc == -EINVAL) {
		snprintf(out, cap, "invalid key or value: the key must be 1-255 "
			 "bytes starting with a printable character, the value "
			 "at most 2048 bytes");
		rc = 1;
		goto out;
	}
	if (rc != 0) {
		rc = fail(out, cap, "meta.update", rc);
		goto out;
	}
	m0sim_sb_init(&sb, out, cap);
	m0sim_sb_printf(&sb, "{\"key\":");
	m0sim_sb_json_utf8(&sb, key, strlen(key));
	m0sim_sb_printf(&sb, ",\"value\":");
	m0sim_sb_json_utf8(&sb, val, strlen(val));
	m0sim_sb_printf(&sb, ",\"previous\":");
	if (orc == 0)
		m0sim_sb_json_utf8(&sb, old, strlen(old));
	else
		m0sim_sb_printf(&sb, "null");
	m0sim_sb_printf(&sb, "}");
	rc = json_out((int)M0_MIN(sb.sb_len, (size_t)INT32_MAX), out, cap,
		      "meta.update");
out:
	free(key);
	free(val);
	free(old);
	return rc;
}

static int h_meta_get(void *u, const char *args, const struct ri_ctl_peer *peer,
		      char *out, size_t cap)
{
	char *key = calloc(1, CONTROL_STR_MAX), *val = calloc(1, CONTROL_STR_MAX);
	struct m0sim_sbuf sb;
	int rc;

	(void)u, (void)peer;
	if (key == NULL || val == NULL) {
		rc = fail(out, cap, "meta.get", -ENOMEM);
		goto out;
	}
	if (arg_str(args, "key", key, CONTROL_STR_MAX) != 0) {
		snprintf(out, cap, "key must be a string without NUL");
		rc = 1;
		goto out;
	}
	rc = m0sim_meta_get(key, val, CONTROL_STR_MAX);
	if (rc != 0 && rc != -ENOENT) {
		rc = fail(out, cap, "meta.get", rc);
		goto out;
	}
	m0sim_sb_init(&sb, out, cap);
	m0sim_sb_printf(&sb, "{\"key\":");
	m0sim_sb_json_utf8(&sb, key, strlen(key));
	m0sim_sb_printf(&sb, ",\"value\":");
	if (rc == 0)
		m0sim_sb_json_utf8(&sb, val, strlen(val));
	else
		m0sim_sb_printf(&sb, "null");
	m0sim_sb_printf(&sb, "}");
	rc = json_out((int)M0_MIN(sb.sb_len, (size_t)INT32_MAX), out, cap,
		      "meta.get");
out:
	free(key);
	free(val);
	return rc;
}

static int h_block_repair(void *u, const char *args,
			  const struct ri_ctl_peer *peer, char *out, size_t cap)
{
	char f[128], msg[512];
	struct m0_fid fid;
	uint64_t block;
	struct m0sim_sbuf sb;
	int rc;

	(void)u, (void)peer;
	if (arg_str(args, "fid", f, sizeof f) != 0 || m0_fid_sscanf(f, &fid) != 0) {
		snprintf(out, cap, "fid must look like <hex:hex>");
		return 1;
	}
	if (arg_u64(args, "block", false, &block) != 0) {
		snprintf(out, cap, "block must be an unsigned integer");
		return 1;
	}
	rc = m0sim_block_repair(fid, block, msg, sizeof msg);
	if (rc != 0) {
		if (msg[0] != 0)
			snprintf(out, cap, "%s", msg);
		else
			fail(out, cap, "block.repair", rc);
		return 1;
	}
	m0sim_sb_init(&sb, out, cap);
	m0sim_sb_printf(&sb, "{\"fid\":");
	m0sim_sb_fid(&sb, &fid);
	m0sim_sb_printf(&sb, ",\"block\":%" PRIu64 ",\"message\":", block);
	m0sim_sb_json_str(&sb, msg, strlen(msg));
	m0sim_sb_printf(&sb, "}");
	return json_out((int)M0_MIN(sb.sb_len, (size_t)INT32_MAX), out, cap,
			"block.repair");
}

static int h_service_state(void *u, const char *args,
			   const struct ri_ctl_peer *peer, char *out, size_t cap)
{
	char svc[32], state[32];
	int rc;

	(void)u, (void)peer;
	if (arg_str(args, "service", svc, sizeof svc) != 0 ||
	    arg_str(args, "state", state, sizeof state) != 0) {
		snprintf(out, cap, "service and state must be strings");
		return 1;
	}
	rc = m0sim_service_state(svc, state);
	if (rc == -ENOENT || rc == -EINVAL) {
		snprintf(out, cap, "unknown service %s or state %s", svc, state);
		return 1;
	}
	if (rc != 0)
		return fail(out, cap, "service.state", rc);
	snprintf(out, cap, "{\"service\":\"%s\",\"state\":\"%s\"}", svc, state);
	return 0;
}

static int h_cob_list(void *u, const char *args, const struct ri_ctl_peer *peer,
		      char *out, size_t cap)
{
	char f[128];
	struct m0_fid fid;
	int n;

	(void)u, (void)peer;
	if (arg_str(args, "fid", f, sizeof f) != 0 || m0_fid_sscanf(f, &fid) != 0) {
		snprintf(out, cap, "fid must look like <hex:hex>");
		return 1;
	}
	n = m0sim_cob_list(fid, out, cap);
	if (n == -ENOENT || n == -EINVAL) {
		memset(out, 0, cap);
		if (n == -ENOENT)
			snprintf(out, cap, "no object with fid %s", f);
		else
			snprintf(out, cap, "%s is neither an object fid (type 'G', "
				 "<47...:...>) nor a cob fid (type 'C', <43...:...>)", f);
		return 1;
	}
	return json_out(n, out, cap, "cob.list");
}

static int h_queue(void *u, const char *args, const struct ri_ctl_peer *peer,
		   char *out, size_t cap)
{
	(void)u, (void)args, (void)peer;
	return json_out(m0sim_queue_json(out, cap), out, cap, "reqh.queue");
}

static int h_stats(void *u, const char *args, const struct ri_ctl_peer *peer,
		   char *out, size_t cap)
{
	(void)u, (void)args, (void)peer;
	return json_out(m0sim_stats_json(out, cap), out, cap, "stats");
}

static int h_btree_node(void *u, const char *args,
			const struct ri_ctl_peer *peer, char *out, size_t cap)
{
	uint64_t addr;
	int n;

	(void)u, (void)peer;
	if (arg_u64(args, "address", true, &addr) != 0) {
		snprintf(out, cap, "address must be an integer or a string like "
			 "0x7f12a4c01000");
		return 1;
	}
	n = m0sim_btree_node_json(addr, out, cap);
	if (n == -ENOENT) {
		memset(out, 0, cap);
		snprintf(out, cap, "0x%" PRIx64 " is not inside a node of the "
			 "metadata B-tree (see stats: store.btree.root_addr)", addr);
		return 1;
	}
	if (n == -EIO) {
		memset(out, 0, cap);
		snprintf(out, cap, "the node page at 0x%" PRIx64 " is malformed", addr);
		return 1;
	}
	return json_out(n, out, cap, "btree.node");
}

/* ------------------------------------------------------ report sections */

static int r_config(void *u, char *out, size_t cap)
{
	(void)u;
	snprintf(out, cap, "%s", control_config ? control_config : "null");
	return 0;
}

static int r_version(void *u, char *out, size_t cap)
{
	(void)u;
	snprintf(out, cap, "{\"m0sim\":\"%s\",\"ri_control\":\"%s\","
		 "\"protocol\":%d,\"compiler\":\"%s\"}", M0SIM_VERSION,
		 ri_ctl_version(), RI_CTL_PROTOCOL_VERSION, __VERSION__);
	return 0;
}

static int r_state(void *u, char *out, size_t cap)
{
	int n = m0sim_stats_json(out, cap);

	(void)u;
	if (n < 0 || (size_t)n >= cap) {
		memset(out, 0, cap);
		snprintf(out, cap, "stats unavailable (%d)", n);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------ start/stop */

#define OBJ(props, req) \
	"{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req "]}"
#define FID_PROP(what) \
	"\"fid\":{\"type\":\"string\",\"description\":\"" what " as <hex:hex>\"}"

static const struct command {
	const char *name;
	const char *help;
	const char *schema;
	uint32_t flags;
	ri_ctl_handler_fn fn;
} commands[] = {
	{ "reqh.pause", "Stop the request handlers taking requests (they queue); "
	  "returns once none runs", NULL, RI_CTL_MUTATES, h_pause },
	{ "reqh.resume", "Let the request handlers run queued requests again",
	  NULL, RI_CTL_MUTATES, h_resume },
	{ "session.reset", "Close the connection of an rpc session (the client "
	  "reconnects)",
	  OBJ("\"session_id\":{\"type\":\"integer\",\"minimum\":1,"
	      "\"description\":\"session id, from stats.sessions\"}",
	      "\"session_id\""), RI_CTL_MUTATES, h_session_reset },
	{ "meta.update", "Set a free-form metadata record in one WAL transaction",
	  OBJ("\"key\":{\"type\":\"string\",\"description\":\"printable key, "
	      "1-255 bytes\"},\"value\":{\"type\":\"string\","
	      "\"description\":\"at most 2048 bytes\"}",
	      "\"key\",\"value\""), RI_CTL_MUTATES, h_meta_update },
	{ "block.repair", "Rebuild a data or parity block from its stripe and "
	  "write it back",
	  OBJ(FID_PROP("object fid (block: object block) or cob fid (block: cob "
		       "block)") ",\"block\":{\"type\":\"integer\",\"minimum\":0,"
	      "\"description\":\"block number\"}", "\"fid\",\"block\""),
	  RI_CTL_MUTATES, h_block_repair },
	{ "service.state", "Set the HA state of a service",
	  OBJ("\"service\":{\"type\":\"string\",\"enum\":[\"ioservice\","
	      "\"mdservice\",\"sss\"]},\"state\":{\"type\":\"string\","
	      "\"enum\":[\"online\",\"offline\",\"failed\"]}",
	      "\"service\",\"state\""), RI_CTL_MUTATES, h_service_state },
	{ "meta.get", "Read a free-form metadata record (null when absent)",
	  OBJ("\"key\":{\"type\":\"string\",\"description\":\"printable key\"}",
	      "\"key\""), 0, h_meta_get },
	{ "cob.list", "Cobs of an object: devices, extents, paths",
	  OBJ(FID_PROP("object fid or one of its cob fids"), "\"fid\""), 0,
	  h_cob_list },
	{ "reqh.queue", "Queued and blocked FOMs of every locality", NULL, 0,
	  h_queue },
	{ "stats", "Service statistics (the stats request's JSON)", NULL, 0,
	  h_stats },
	{ "btree.node", "A node of the metadata B-tree, given an address inside "
	  "its page (checked against the tree's nodes, never dereferenced)",
	  OBJ("\"address\":{\"type\":[\"string\",\"integer\"],"
	      "\"description\":\"e.g. 0x7f12a4c01000 (stats: "
	      "store.btree.root_addr)\"}", "\"address\""), 0, h_btree_node },
};

static char *config_json(const struct m0sim_control_cfg *c)
{
	size_t cap = 1024 + 6 * (strlen(c->cc_data) +
				 (c->cc_report_dir ? strlen(c->cc_report_dir) : 0) +
				 (c->cc_socket_dir ? strlen(c->cc_socket_dir) : 0) +
				 (c->cc_endpoint ? strlen(c->cc_endpoint) : 0));
	char *buf = malloc(cap);
	struct m0sim_sbuf sb;

	if (buf == NULL)
		return NULL;
	m0sim_sb_init(&sb, buf, cap);
	m0sim_sb_printf(&sb, "{\"port\":%lu,\"endpoint\":", c->cc_port);
	m0sim_sb_json_utf8(&sb, c->cc_endpoint ? c->cc_endpoint : "",
			   c->cc_endpoint ? strlen(c->cc_endpoint) : 0);
	m0sim_sb_printf(&sb, ",\"data\":");
	m0sim_sb_json_utf8(&sb, c->cc_data, strlen(c->cc_data));
	m0sim_sb_printf(&sb, ",\"devices\":%lu,\"store_devices\":%u,"
			"\"localities\":%lu,\"handler_delay_us\":%lu,\"sync\":%s,"
			"\"trace\":%s,\"report_dir\":", c->cc_devices,
			c->cc_store_devices, c->cc_localities, c->cc_delay_us,
			c->cc_sync ? "true" : "false", c->cc_trace ? "true" : "false");
	if (c->cc_report_dir != NULL)
		m0sim_sb_json_utf8(&sb, c->cc_report_dir, strlen(c->cc_report_dir));
	else
		m0sim_sb_printf(&sb, "null");
	m0sim_sb_printf(&sb, ",\"control_dir\":");
	if (c->cc_socket_dir != NULL)
		m0sim_sb_json_utf8(&sb, c->cc_socket_dir, strlen(c->cc_socket_dir));
	else
		m0sim_sb_printf(&sb, "null");
	m0sim_sb_printf(&sb, "}");
	if (sb.sb_len >= cap) {
		free(buf);
		return NULL;
	}
	return buf;
}

int m0sim_control_start(const struct m0sim_control_cfg *cfg, char *err,
			size_t errlen)
{
	struct ri_ctl_options opts;
	size_t i;
	int rc;

	if (control != NULL)
		return -EALREADY;
	control_config = config_json(cfg);
	if (control_config == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ri_ctl_options_init(&opts);
	if (opts.struct_size != sizeof opts) {
		snprintf(err, errlen, "ri_control.h does not match the library");
		return -EINVAL;
	}
	opts.flags |= RI_CTL_OPT_SIGUSR2_REPORT;
	opts.report_dir = cfg->cc_report_dir;
	opts.socket_dir = cfg->cc_socket_dir;
	opts.handler_buf_size = CONTROL_OUT_MAX;
	control = ri_ctl_start("m0d", &opts);
	if (control == NULL) {
		rc = errno != 0 ? -errno : -EINVAL;
		snprintf(err, errlen, "%s", ri_ctl_last_error());
		goto fail;
	}
	for (i = 0; i < M0_ARRAY_SIZE(commands); i++) {
		const struct command *c = &commands[i];

		if (ri_ctl_register(control, c->name, c->help, c->schema, c->flags,
				    c->fn, NULL) != 0) {
			rc = errno != 0 ? -errno : -EINVAL;
			snprintf(err, errlen, "register %s: %s", c->name,
				 ri_ctl_last_error());
			goto fail;
		}
	}
	if (ri_ctl_register_report_section(control, "config", r_config, NULL) != 0 ||
	    ri_ctl_register_report_section(control, "version", r_version, NULL) != 0 ||
	    ri_ctl_register_report_section(control, "state", r_state, NULL) != 0) {
		rc = errno != 0 ? -errno : -EINVAL;
		snprintf(err, errlen, "report section: %s", ri_ctl_last_error());
		goto fail;
	}
	M0_LOG(M0_NOTICE, "control socket %s", ri_ctl_socket_path(control));
	return 0;
fail:
	ri_ctl_stop(control);
	control = NULL;
	free(control_config);
	control_config = NULL;
	return rc;
}

const char *m0sim_control_socket(void)
{
	return control != NULL ? ri_ctl_socket_path(control) : NULL;
}

void m0sim_control_stop(void)
{
	ri_ctl_stop(control);
	control = NULL;
	free(control_config);
	control_config = NULL;
}

#endif /* M0SIM_CONTROL */
