/* ctl.c - the service instance and its internal control API. */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_OTHER
#include "reqh.h"
#include "m0sim_ctl.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The one service instance of m0d (globals, so that tools can find them by
 * symbol too). */
struct m0_reqh m0sim_reqh;
struct m0_rpc_machine m0sim_rpc_machine;
struct m0sim_store m0sim_store;

static int ctl_ready;

void m0sim_ctl_ready(int ready)
{
	__atomic_store_n(&ctl_ready, ready, __ATOMIC_RELEASE);
}

static bool up(void)
{
	return __atomic_load_n(&ctl_ready, __ATOMIC_ACQUIRE) != 0;
}

int m0sim_reqh_pause(void)
{
	return up() ? m0sim_reqh_pause_(&m0sim_reqh) : -EAGAIN;
}

int m0sim_reqh_resume(void)
{
	return up() ? m0sim_reqh_resume_(&m0sim_reqh) : -EAGAIN;
}

int m0sim_session_reset(uint64_t session_id)
{
	return up() ? m0sim_rpc_session_reset(&m0sim_rpc_machine, session_id) :
		-EAGAIN;
}

int m0sim_meta_update(const char *key, const char *value)
{
	if (key == NULL || value == NULL)
		return -EINVAL;
	return up() ? m0sim_store_meta_update(&m0sim_store, key, value) : -EAGAIN;
}

int m0sim_meta_get(const char *key, char *value, size_t len)
{
	if (key == NULL || value == NULL)
		return -EINVAL;
	return up() ? m0sim_store_meta_get(&m0sim_store, key, value, len) : -EAGAIN;
}

int m0sim_block_repair(struct m0_fid fid, uint64_t block, char *msg,
		       size_t msglen)
{
	if (msg != NULL && msglen > 0)
		msg[0] = 0;
	return up() ? m0sim_store_block_repair(&m0sim_store, &fid, block, msg,
					       msglen) : -EAGAIN;
}

int m0sim_service_state(const char *service, const char *state)
{
	if (service == NULL || state == NULL)
		return -EINVAL;
	return up() ? m0sim_reqh_service_state_set(&m0sim_reqh, service, state) :
		-EAGAIN;
}

static int sb_result(const struct m0sim_sbuf *sb)
{
	return sb->sb_len > INT32_MAX ? -E2BIG : (int)sb->sb_len;
}

int m0sim_btree_node_json(uint64_t addr, char *json, size_t len)
{
	struct m0sim_sbuf sb;
	int rc;

	if (!up())
		return -EAGAIN;
	m0sim_sb_init(&sb, json, len);
	rc = m0_btree_node_json(&m0sim_store.st_tree, addr, &sb);
	return rc != 0 ? rc : sb_result(&sb);
}

int m0sim_cob_list(struct m0_fid fid, char *json, size_t len)
{
	struct m0sim_sbuf sb;
	int rc;

	if (!up())
		return -EAGAIN;
	m0sim_sb_init(&sb, json, len);
	rc = m0sim_store_cob_list(&m0sim_store, &fid, &sb);
	return rc != 0 ? rc : sb_result(&sb);
}

int m0sim_stats_json(char *buf, size_t len)
{
	struct m0sim_sbuf sb;

	if (!up())
		return -EAGAIN;
	m0sim_sb_init(&sb, buf, len);
	m0sim_reqh_stats_json(&m0sim_reqh, &sb);
	return sb_result(&sb);
}

int m0sim_queue_json(char *buf, size_t len)
{
	struct m0sim_sbuf sb;

	if (!up())
		return -EAGAIN;
	m0sim_sb_init(&sb, buf, len);
	m0sim_reqh_queue_json(&m0sim_reqh, &sb);
	return sb_result(&sb);
}

/* ------------------------------------------------------ text commands */

/* Splits off the next blank-separated word of *s. */
static char *word(char **s)
{
	char *w;

	while (**s != 0 && isspace((unsigned char)**s))
		(*s)++;
	if (**s == 0)
		return NULL;
	w = *s;
	while (**s != 0 && !isspace((unsigned char)**s))
		(*s)++;
	if (**s != 0)
		*(*s)++ = 0;
	return w;
}

static int json_result(int rc, size_t outlen, char *out)
{
	if (rc >= 0 && (size_t)rc >= outlen) {
		snprintf(out, outlen, "output too large (%d bytes)", rc);
		return -E2BIG;
	}
	return rc < 0 ? rc : 0;
}

static int admin_fail(char *out, size_t outlen, int rc)
{
	snprintf(out, outlen, "%s", strerror(-rc));
	return rc;
}

int m0sim_admin(const char *line, char *out, size_t outlen)
{
	char *copy, *s, *cmd;
	int rc = 0;

	if (outlen == 0)
		return -EINVAL;
	out[0] = 0;
	copy = strdup(line);
	if (copy == NULL)
		return -ENOMEM;
	s = copy;
	cmd = word(&s);
	M0_LOG(M0_NOTICE, "admin command %s", cmd ? cmd : "");
	if (cmd == NULL || strcmp(cmd, "help") == 0) {
		snprintf(out, outlen, "commands: pause | resume | reset SESSION_ID | "
			 "meta KEY VALUE | meta-get KEY | repair FID BLOCK | "
			 "service NAME online|offline|failed | coblist FID | stats | "
			 "queue");
		rc = cmd == NULL ? -EINVAL : 0;
	} else if (strcmp(cmd, "pause") == 0) {
		rc = m0sim_reqh_pause();
		if (rc == 0)
			snprintf(out, outlen, "paused");
		else
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "resume") == 0) {
		rc = m0sim_reqh_resume();
		if (rc == 0)
			snprintf(out, outlen, "resumed");
		else
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "reset") == 0) {
		char *id = word(&s), *end = NULL;
		uint64_t sid = id ? strtoull(id, &end, 0) : 0;

		if (id == NULL || *end != 0)
			rc = -EINVAL;
		else
			rc = m0sim_session_reset(sid);
		if (rc == 0)
			snprintf(out, outlen, "session %" PRIu64 " reset", sid);
		else
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "meta") == 0) {
		char *key = word(&s);

		while (*s != 0 && isspace((unsigned char)*s))
			s++;
		rc = key == NULL ? -EINVAL : m0sim_meta_update(key, s);
		if (rc == 0)
			snprintf(out, outlen, "updated %s", key);
		else
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "meta-get") == 0) {
		char *key = word(&s);

		rc = key == NULL ? -EINVAL : m0sim_meta_get(key, out, outlen);
		if (rc != 0)
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "repair") == 0) {
		char *f = word(&s), *b = word(&s), *end = NULL;
		struct m0_fid fid;
		uint64_t block = b ? strtoull(b, &end, 0) : 0;

		if (f == NULL || b == NULL || *end != 0 || m0_fid_sscanf(f, &fid) != 0) {
			rc = -EINVAL;
			snprintf(out, outlen, "usage: repair FID BLOCK");
		} else {
			rc = m0sim_block_repair(fid, block, out, outlen);
			if (rc != 0 && out[0] == 0)
				admin_fail(out, outlen, rc);
		}
	} else if (strcmp(cmd, "service") == 0) {
		char *name = word(&s), *state = word(&s);

		rc = name && state ? m0sim_service_state(name, state) : -EINVAL;
		if (rc == 0)
			snprintf(out, outlen, "service %s %s", name, state);
		else
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "coblist") == 0) {
		char *f = word(&s);
		struct m0_fid fid;

		if (f == NULL || m0_fid_sscanf(f, &fid) != 0)
			rc = admin_fail(out, outlen, -EINVAL);
		else
			rc = json_result(m0sim_cob_list(fid, out, outlen), outlen, out);
		if (rc != 0 && out[0] == 0)
			admin_fail(out, outlen, rc);
	} else if (strcmp(cmd, "stats") == 0) {
		rc = json_result(m0sim_stats_json(out, outlen), outlen, out);
	} else if (strcmp(cmd, "queue") == 0) {
		rc = json_result(m0sim_queue_json(out, outlen), outlen, out);
	} else {
		snprintf(out, outlen, "unknown command %s (try help)", cmd);
		rc = -EINVAL;
	}
	free(copy);
	return rc;
}
