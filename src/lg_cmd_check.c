/*
 * `lugger check -c FILE`: loads the config, compiles every script it
 * names, and prints every problem found, one per line on stderr
 * (DESIGN.md, "Command line"). Exit 0 when all is well, 1 when anything
 * is wrong, 2 for bad arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_cmd.h"
#include "lg_config.h"

#define DEFAULT_CONFIG "/etc/lugger/lugger.lua"

static void usage(void) {
  fputs("usage: lugger check [-c FILE]\n"
        "  -c, --config FILE  config to check (default " DEFAULT_CONFIG ")\n",
        stderr);
}

int lg_cmd_check(int argc, char **argv) {
  const char *path = DEFAULT_CONFIG;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) &&
        i + 1 < argc) {
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage();
      return 0;
    } else {
      fprintf(stderr, "lugger check: unexpected argument '%s'\n", a);
      usage();
      return 2;
    }
  }

  lg_config_t *c = NULL;
  lg_config_errors_t errs;
  lg_config_load_ex(path, LG_CONFIG_PARTIAL, &c, &errs);
  if (c != NULL)
    lg_config_compile_scripts(c, &errs);
  size_t bad = errs.n;
  for (size_t i = 0; i < errs.n; i++)
    fprintf(stderr, "%s\n", errs.msgs[i]);
  lg_config_errors_free(&errs);
  if (bad > 0) {
    fprintf(stderr, "lugger check: %s: %zu problem%s found\n",
            c != NULL ? c->path : path, bad, bad == 1 ? "" : "s");
    lg_config_destroy(c);
    return 1;
  }
  printf("config OK: %zu sources, %zu pipelines, %zu outputs\n", c->nsources,
         c->npipelines, c->noutputs);
  lg_config_destroy(c);
  return 0;
}
