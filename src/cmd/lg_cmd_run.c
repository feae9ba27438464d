/*
 * `lugger run [-c FILE] [--once]`: load the config and run the collector.
 * --once reads every file to its current end, delivers, writes the
 * checkpoints and exits 0 (like Filebeat's -once), for batch jobs,
 * benchmarks and the quick start.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "cmd/lg_cmd.h"
#include "config/lg_config.h"
#include "core/lg_log.h"
#include "engine/lg_engine.h"

#define DEFAULT_CONFIG "/etc/lugger/lugger.lua"

static void usage(FILE *f) {
  fputs("usage: lugger run [-c FILE] [--once]\n"
        "  -c, --config FILE  config to run (default " DEFAULT_CONFIG ")\n"
        "  --once             read every file to its current end, deliver,\n"
        "                     write the checkpoints and exit\n",
        f);
}

int lg_cmd_run(int argc, char **argv) {
  const char *path = DEFAULT_CONFIG;
  lg_engine_opts_t opts = {0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    } else if (strcmp(a, "--once") == 0) {
      opts.once = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      /* Say which argument is wrong: a bare usage line leaves the user to
       * guess (a -c without its FILE, a typo in --once). */
      if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
        fprintf(stderr, "lugger run: %s needs a FILE\n", a);
      else
        fprintf(stderr, "lugger run: unexpected argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  /* A SIGTERM or SIGINT that comes while the config and its scripts load
   * must stop lugger like any other (drain, checkpoints, exit 0), not kill
   * it with the default action; SIGHUP must not kill it either. Hold them
   * until lg_engine_run has its handlers in place and unblocks them. */
  sigset_t early;
  sigemptyset(&early);
  sigaddset(&early, SIGTERM);
  sigaddset(&early, SIGINT);
  sigaddset(&early, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &early, NULL);
  /* A node's log files can outnumber the default soft descriptor limit
   * (often 1024); the hard limit is what the admin allows, so use it.
   * Files beyond it are handled by closing idle ones (lg_tail_idle.c). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  lg_config_t *conf = NULL;
  lg_config_errors_t errs = {0};
  if (lg_config_load(path, &conf, &errs) != 0) {
    /* lugger's log, like everything run writes on stderr (DESIGN.md,
     * "Operations": one JSON object per line). */
    for (size_t i = 0; i < errs.n; i++) {
      const char *m = errs.msgs[i];
      if (m[0] == '/') /* names the file already: "/etc/x.lua:3: ..." */
        lg_log_error("config", "%s", m);
      else
        lg_log_error("config", "%s: %s", path, m);
    }
    lg_config_errors_free(&errs);
    return 1;
  }
  lg_config_errors_free(&errs);
  for (size_t i = 0; i < conf->nwarnings; i++)
    lg_log_warn("config", "%s: %s", path, conf->warnings[i]);
  int rc = lg_engine_run(conf, &opts);
  lg_config_destroy(conf);
  return rc;
}
