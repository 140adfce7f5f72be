/* m0d.c - the m0sim server: store, request handler and rpc machine.
 *
 *   m0d [--port N] [--data DIR] [--devices N] [--localities N]
 *       [--handler-delay-us N] [--no-sync] [--trace]
 *       [--no-control] [--report-dir DIR] [--control-dir DIR]
 *
 * Prints "endpoint inet:tcp:127.0.0.1@PORT" once it accepts requests (and
 * its control socket, when built with ri-control, is up), and "stats {...}"
 * when it stops (SIGTERM or SIGINT). */
#define _GNU_SOURCE
#define M0_TRACE_SUBSYSTEM M0_TRACE_SUBSYS_OTHER
#include "reqh.h"
#include "m0sim_ctl.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern struct m0_reqh m0sim_reqh;
extern struct m0_rpc_machine m0sim_rpc_machine;
extern struct m0sim_store m0sim_store;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: m0d [--port N] [--data DIR] [--devices N] [--localities N]\n"
		"           [--handler-delay-us N] [--no-sync] [--trace]\n"
		"           [--no-control] [--report-dir DIR] [--control-dir DIR]\n"
		"  --port N              TCP port on 127.0.0.1 (0: any free port; default 0)\n"
		"  --data DIR            data directory (default ./m0sim-data)\n"
		"  --devices N           data devices, plus one parity device (default 3)\n"
		"  --localities N        request handler localities (default 2)\n"
		"  --handler-delay-us N  extra service time per request (default 0)\n"
		"  --no-sync             no fsync (survives kill -9, not power loss)\n"
		"  --trace               print trace records to stderr\n"
		"  --no-control          no ri-control socket (and no SIGUSR2 report)\n"
		"  --report-dir DIR      SIGUSR2 reports go to files in DIR (default stderr)\n"
		"  --control-dir DIR     directory of the control socket (default: ri-control's)\n");
}

static int num(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return *s == 0 || *end != 0 || errno != 0 || *out > max ? -1 : 0;
}

static void print_stats(void)
{
	size_t cap = 1 << 16;

	for (;;) {
		char *buf = malloc(cap);
		int n;

		if (buf == NULL)
			return;
		n = m0sim_stats_json(buf, cap);
		if (n >= 0 && (size_t)n < cap) {
			printf("stats %s\n", buf);
			fflush(stdout);
			free(buf);
			return;
		}
		free(buf);
		if (n < 0)
			return;
		cap = (size_t)n + 1;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "data", required_argument, NULL, 'd' },
		{ "devices", required_argument, NULL, 'n' },
		{ "localities", required_argument, NULL, 'l' },
		{ "handler-delay-us", required_argument, NULL, 'w' },
		{ "no-sync", no_argument, NULL, 's' },
		{ "trace", no_argument, NULL, 't' },
		{ "no-control", no_argument, NULL, 'C' },
		{ "report-dir", required_argument, NULL, 'R' },
		{ "control-dir", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./m0sim-data", *report_dir = NULL, *control_dir = NULL;
	unsigned long port = 0, devices = 3, locs = 2, delay = 0, v;
	bool sync = true, with_control = true;
	char err[512] = "";
	uint32_t ndev;
	sigset_t sigs;
	int c, sig, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (num(optarg, 65535, &port) != 0)
				goto bad;
			break;
		case 'd':
			data = optarg;
			break;
		case 'n':
			if (num(optarg, M0SIM_DEV_MAX, &devices) != 0 || devices == 0)
				goto bad;
			break;
		case 'l':
			if (num(optarg, 64, &locs) != 0 || locs == 0)
				goto bad;
			break;
		case 'w':
			if (num(optarg, 10000000, &v) != 0)
				goto bad;
			delay = v;
			break;
		case 's':
			sync = false;
			break;
		case 't':
			m0sim_trace_print = 1;
			break;
		case 'C':
			with_control = false;
			break;
		case 'R':
			report_dir = optarg;
			break;
		case 'D':
			control_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;

	/* Threads inherit this mask: only main receives the stop signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	ndev = (uint32_t)devices;
	rc = m0sim_store_open(&m0sim_store, data, &ndev, sync, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "m0d: store: %s\n", err);
		return 1;
	}
	rc = m0sim_reqh_init(&m0sim_reqh, &m0sim_store, &m0sim_rpc_machine,
			     (uint32_t)locs, delay, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "m0d: request handler: %s\n", err);
		return 1;
	}
	rc = m0sim_rpc_start(&m0sim_rpc_machine, &m0sim_reqh, (unsigned)port, err,
			     sizeof err);
	if (rc != 0) {
		fprintf(stderr, "m0d: rpc: %s\n", err);
		return 1;
	}
	m0sim_store.st_server_ep = m0sim_rpc_machine.rm_ep.nep_addr;
	m0sim_ctl_ready(1);
	if (with_control) {
		struct m0sim_control_cfg cc = {
			.cc_port = port,
			.cc_endpoint = m0sim_rpc_machine.rm_ep.nep_addr,
			.cc_data = data,
			.cc_devices = devices,
			.cc_store_devices = ndev,
			.cc_localities = locs,
			.cc_delay_us = delay,
			.cc_sync = sync,
			.cc_trace = m0sim_trace_print != 0,
			.cc_report_dir = report_dir,
			.cc_socket_dir = control_dir,
		};

		rc = m0sim_control_start(&cc, err, sizeof err);
		if (rc == 0)
			fprintf(stderr, "m0d: control socket %s\n",
				m0sim_control_socket());
		else if (rc != -ENOTSUP)
			fprintf(stderr, "m0d: control: %s (running without it)\n",
				err);
	}
	M0_LOG(M0_ALWAYS, "m0d up at %s, data %s, %u+1 devices, %u localities",
	       m0sim_rpc_machine.rm_ep.nep_addr, data, ndev, (unsigned)locs);
	printf("endpoint %s\n", m0sim_rpc_machine.rm_ep.nep_addr);
	fflush(stdout);

	do {
		rc = sigwait(&sigs, &sig);
	} while (rc != 0);
	fprintf(stderr, "m0d: signal %d, stopping\n", sig);

	/* Stop intake, close connections, run what is queued, wait for every
	 * connection to be released, then report and close the store. */
	m0sim_rpc_stop(&m0sim_rpc_machine);
	m0sim_reqh_resume_(&m0sim_reqh);
	m0sim_reqh_shutdown(&m0sim_reqh);
	m0sim_rpc_wait_idle(&m0sim_rpc_machine);
	print_stats();
	m0sim_control_stop();
	m0sim_ctl_ready(0);
	m0sim_rpc_fini(&m0sim_rpc_machine);
	m0sim_reqh_fini(&m0sim_reqh);
	m0sim_store_close(&m0sim_store);
	return 0;
bad:
	usage(stderr);
	return 2;
}
