/*
 * `lugger check -c FILE`: loads the config, compiles every script it
 * names, loads them into the sandbox and runs their init(params), and
 * prints every problem found, one per line on stderr
 * (DESIGN.md, "Command line"). Exit 0 when all is well, 1 when anything
 * is wrong, 2 for bad arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/lg_cmd.h"
#include "config/lg_config.h"
#include "core/lg_buf.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_lua.h"

#define DEFAULT_CONFIG "/etc/lugger/lugger.lua"

static void usage(FILE *f) {
  fputs("usage: lugger check [-c FILE] | --options-markdown\n"
        "  -c, --config FILE   config to check (default " DEFAULT_CONFIG ")\n"
        "  --options-markdown  print every output type's options as Markdown\n"
        "                      tables (the README's \"Outputs\" section)\n",
        f);
}

/* 1 if a message is about pipeline `name` ("pipelines.<name>." or
 * "pipelines.<name>:"). */
static int about_pipeline(const lg_config_errors_t *e, const char *name) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < e->n; i++) {
    const char *m = e->msgs[i];
    if (strncmp(m, "pipelines.", 10) == 0 && strncmp(m + 10, name, nl) == 0 &&
        (m[10 + nl] == '.' || m[10 + nl] == ':'))
      return 1;
  }
  return 0;
}

/* A stateless pipeline's batches of one file go to every worker, each
 * with its own Lua state: module-level state a script keeps (a counter, a
 * dedupe set) then sees only some of the records, silently. Warns about
 * each write to such state found in the scripts' bytecode (a warning: a
 * cache each worker may fill on its own, such as a lazily compiled
 * pattern, is fine). */
static void warn_state(lg_lua_t *L, int p, const char *name) {
  char buf[4096];
  int n = lg_lua_state_writes(L, p, buf, sizeof buf);
  if (n < 0) {
    fprintf(stderr, "warning: pipelines.%s: cannot look for script state: %s\n",
            name, buf);
    return;
  }
  for (char *line = buf, *next; n > 0 && line != NULL; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    fprintf(stderr,
            "warning: pipelines.%s.stateless: %s: " LG_LUA_STATE_WRITES_WHY
            "\n",
            name, line);
  }
}

/* Routes to an output the config does not have fail every record that
 * takes them, and `lugger test` (no config) cannot tell: report the
 * constant ones. Returns the number of problems. */
static size_t check_routes(lg_lua_t *L, int p, const char *name) {
  char buf[4096];
  int n = lg_lua_unknown_routes(L, p, buf, sizeof buf);
  if (n < 0) {
    fprintf(stderr, "pipelines.%s: cannot look for routes: %s\n", name, buf);
    return 1;
  }
  for (char *line = buf, *next; n > 0 && line != NULL; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    fprintf(stderr, "pipelines.%s: %s\n", name, line);
  }
  return n > 0 ? (size_t)n : 0;
}

/* Loads each pipeline's scripts into the sandbox the collector uses and
 * runs their init(params), so that errors at load time (a global the
 * sandbox does not have, a bad params value) show here and not at the
 * first start. Pipelines with problems found already are skipped. */
static void run_inits(const lg_config_t *c, lg_config_errors_t *errs,
                      size_t *extra) {
  const char **names = calloc(c->noutputs + 1, sizeof *names);
  if (names == NULL)
    return;
  for (size_t i = 0; i < c->noutputs; i++)
    names[i] = c->outputs[i].name;
  lg_lua_opts_t lo = {.output_names = names, .noutputs = c->noutputs};
  char err[1024];
  lg_lua_t *L = lg_lua_create(&lo, err, sizeof err);
  if (L == NULL) {
    fprintf(stderr, "lugger check: cannot start the Lua runtime: %s\n", err);
    (*extra)++;
    free(names);
    return;
  }
  for (size_t p = 0; p < c->npipelines; p++) {
    const lg_conf_pipeline_t *pl = &c->pipelines[p];
    if (pl->nscripts == 0 || pl->name == NULL || about_pipeline(errs, pl->name))
      continue;
    lg_lua_script_t *sc = calloc(pl->nscripts, sizeof *sc);
    if (sc == NULL)
      break;
    for (size_t i = 0; i < pl->nscripts; i++) {
      sc[i].path = pl->scripts[i].path;
      sc[i].params_json = pl->scripts[i].params_json;
      sc[i].compat = pl->scripts[i].compat;
      sc[i].call = pl->scripts[i].call;
      sc[i].compat_opts_json = pl->scripts[i].compat_opts_json;
    }
    if (lg_lua_add_pipeline(L, (int)p, pl->name, sc, pl->nscripts, err,
                            sizeof err) != 0) {
      fprintf(stderr, "pipelines.%s: %s\n", pl->name, err);
      (*extra)++;
    } else {
      *extra += check_routes(L, (int)p, pl->name);
      if (pl->stateless)
        warn_state(L, (int)p, pl->name);
    }
    free(sc);
  }
  lg_lua_destroy(L);
  free(names);
}

int lg_cmd_check(int argc, char **argv) {
  const char *path = DEFAULT_CONFIG;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    } else if (strcmp(a, "--options-markdown") == 0) {
      lg_buf_t b = LG_BUF_INIT;
      int rc = lg_output_options_markdown(&b);
      if (rc == 0)
        fwrite(b.data, 1, b.len, stdout);
      lg_buf_free(&b);
      return rc == 0 ? 0 : 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
        fprintf(stderr, "lugger check: %s needs a FILE\n", a);
      else
        fprintf(stderr, "lugger check: unexpected argument '%s'\n", a);
      usage(stderr);
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
  for (size_t i = 0; c != NULL && i < c->nwarnings; i++)
    fprintf(stderr, "warning: %s\n", c->warnings[i]);
  if (c != NULL)
    run_inits(c, &errs, &bad);
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
