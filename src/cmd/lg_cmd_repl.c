/*
 * lg_cmd_repl.c - `lugger repl [SCRIPT] [--sample FILE] [--format F]
 * [--params JSON] [--compat fluent-bit --call FN ...]`: try a script on
 * sample records interactively (DESIGN.md, "Command line"; issue 5).
 *
 * The commands live in lua/lugger/repl.lua (a session object a busted spec
 * drives too); this file only reads lines and prints what a session
 * returns. In a terminal, lines come from libedit (line editing, history
 * kept in $XDG_STATE_HOME/lugger_history or ~/.lugger_history, or
 * $LUGGER_HISTORY; Tab completes commands) and the current record is shown
 * at the start. From a pipe there are no prompts and no escape codes: each
 * input line prints its result only, and the exit status is 1 when any
 * line failed (a Lua error, a failed command, a script error on the record
 * shown), else 0. Bad usage or an unreadable sample exits 2.
 *
 * The session runs in a Lua state of its own with the trusted runtime
 * (lugger.driver, lugger.sandbox): user code (the script and Lua lines)
 * runs sandboxed exactly as in the collector.
 *
 * A script stuck on a record fails it after settings.script_timeout's
 * default (lugger.testing's time limit, lua/lugger/timelimit.lua), and the
 * next line runs, from a pipe as in a terminal. From a pipe, a Lua line
 * stuck in a loop fails the same way ("... on this line"); in a terminal
 * Lua lines have no limit: Ctrl-C stops them.
 *
 * In a terminal, Ctrl-C while a line runs (a script or Lua line stuck in
 * a loop) interrupts it with the error "interrupted", as lua.c does: the
 * signal handler sets a debug hook that raises the error at the next
 * instruction. JIT-compiled loops never run hooks, so the session's state
 * runs with the JIT off (speed does not matter here; results are the
 * same). At the prompt, Ctrl-C ends the repl as usual.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cmd/lg_cmd.h"
#include "pipeline/lg_lua.h"

#define MAX_COMMANDS 32
#define HISTORY_LINES 1000

static void usage(FILE *f) {
  fputs("usage: lugger repl [SCRIPT] [--sample FILE] [--format "
        "line|cri|docker|json|auto]\n"
        "                   [--params JSON] [--compat fluent-bit --call FN\n"
        "                   [--compat-opt K=V]... [--tag TAG]]\n"
        "\n"
        "Shows the sample's records one at a time with what SCRIPT makes of\n"
        "them, and runs Lua lines against the current record (rec.body,\n"
        "rec.status + 1). :help lists the commands. With stdin from a pipe it\n"
        "prints only results and exits 1 if any line failed.\n",
        f);
}

/* Command names for Tab completion, copied from lugger.repl's list. */
static char *commands[MAX_COMMANDS];
static int ncommands;

static char *complete_command(const char *text, int state) {
  static int next;
  static size_t len;
  if (state == 0) {
    next = 0;
    len = strlen(text);
  }
  while (next < ncommands) {
    const char *c = commands[next++];
    if (strncmp(c, text, len) == 0)
      return strdup(c);
  }
  return NULL;
}

/* Completes commands at the start of a line and file names after :load;
 * nothing in Lua lines (libedit would offer file names there). */
static char **complete(const char *text, int start, int end) {
  (void)end;
  rl_attempted_completion_over = 1;
  if (start > 0 && strncmp(rl_line_buffer, ":load ", 6) == 0) {
    rl_attempted_completion_over = 0; /* libedit's file name completion */
    return NULL;
  }
  if (start != 0 || text[0] != ':')
    return NULL;
  return rl_completion_matches(text, complete_command);
}

/* The history file: $LUGGER_HISTORY, $XDG_STATE_HOME/lugger_history or
 * $HOME/.lugger_history; NULL (no history kept) when none is set. */
static char *history_path(void) {
  const char *h = getenv("LUGGER_HISTORY");
  if (h != NULL && *h)
    return strdup(h);
  const char *dir = getenv("XDG_STATE_HOME");
  const char *name = "/lugger_history";
  if (dir == NULL || *dir == '\0') {
    dir = getenv("HOME");
    name = "/.lugger_history";
  }
  if (dir == NULL || *dir == '\0')
    return NULL;
  size_t n = strlen(dir) + strlen(name) + 1;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s%s", dir, name);
  return p;
}

/* The state a Ctrl-C interrupts, while a line runs. */
static lua_State *volatile running;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
  (void)sig;
  lua_State *L = running;
  if (L != NULL) /* lua_sethook is safe in a signal handler (lua.c) */
    lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT,
                1);
}

/* Prints `text` with a newline unless it is empty. */
static void print_text(const char *text, size_t len) {
  if (len == 0)
    return;
  fwrite(text, 1, len, stdout);
  if (text[len - 1] != '\n')
    fputc('\n', stdout);
  fflush(stdout);
}

/* Runs session:eval(line) (the session is at stack index 1). Prints its
 * text; sets *failed when the line failed. Returns 1 to quit, else 0. */
static int eval_line(lua_State *L, const char *line, int *failed) {
  lua_getfield(L, 1, "eval");
  lua_pushvalue(L, 1);
  lua_pushstring(L, line);
  if (lua_pcall(L, 2, 3, 0) != 0) {
    const char *e = lua_tostring(L, -1);
    printf("internal error: %s\n", e ? e : "?");
    fflush(stdout);
    lua_pop(L, 1);
    *failed = 1;
    return 0;
  }
  size_t len = 0;
  const char *text = lua_tolstring(L, -3, &len);
  if (text != NULL)
    print_text(text, len);
  if (!lua_toboolean(L, -2))
    *failed = 1;
  int quit = lua_toboolean(L, -1);
  lua_pop(L, 3);
  return quit;
}

static const char start_src[] =
    "local opts = ...\n"
    "local repl = require('lugger.repl')\n"
    "local s, msg = repl.new(opts)\n"
    "if not s then return nil, msg end\n"
    "local names = {}\n"
    "for k, c in ipairs(repl.commands) do names[k] = c[1] end\n"
    "return s, msg, names\n";

typedef struct repl_args {
  const char *script, *sample, *format, *params, *compat, *call, *tag;
  char **copts; /* K=V strings */
  int ncopts;
  int interactive; /* stdin is a terminal */
} repl_args_t;

/* Pushes the options table of lugger.repl.new. */
static void push_opts(lua_State *L, const repl_args_t *a) {
  lua_createtable(L, 0, 8);
#define SET(field, v)                                                          \
  if ((v) != NULL) {                                                           \
    lua_pushstring(L, (v));                                                    \
    lua_setfield(L, -2, field);                                                \
  }
  SET("script", a->script);
  SET("sample", a->sample);
  SET("format", a->format);
  SET("params", a->params);
  SET("compat", a->compat);
  SET("call", a->call);
  SET("tag", a->tag);
#undef SET
  /* Lua lines get lugger.repl's time limit (1 s of CPU time) except in a
   * terminal, where Ctrl-C stops them (on_sigint) and a line may run as
   * long as its user wants. */
  if (a->interactive) {
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "line_timeout_ms");
  }
  if (a->ncopts > 0) {
    lua_createtable(L, 0, a->ncopts);
    for (int k = 0; k < a->ncopts; k++) {
      const char *eq = strchr(a->copts[k], '=');
      lua_pushlstring(L, a->copts[k], (size_t)(eq - a->copts[k]));
      lua_pushstring(L, eq + 1);
      lua_settable(L, -3);
    }
    lua_setfield(L, -2, "compat_opts");
  }
}

/* Reads lines from a terminal with libedit until :quit or EOF. */
static int run_terminal(lua_State *L) {
  char *hist = history_path();
  rl_readline_name = "lugger";
  rl_attempted_completion_function = complete;
  using_history();
  stifle_history(HISTORY_LINES);
  if (hist != NULL)
    read_history(hist);
  int failed = 0;
  for (;;) {
    char *line = readline("lugger> ");
    if (line == NULL) { /* Ctrl-D */
      fputc('\n', stdout);
      break;
    }
    if (line[strspn(line, " \t")] != '\0')
      add_history(line);
    /* Ctrl-C interrupts the line, not the repl, while it runs. */
    struct sigaction sa = {.sa_handler = on_sigint}, old;
    sigemptyset(&sa.sa_mask);
    running = L;
    sigaction(SIGINT, &sa, &old);
    int quit = eval_line(L, line, &failed);
    sigaction(SIGINT, &old, NULL);
    running = NULL;
    lua_sethook(L, NULL, 0, 0);
    free(line);
    if (quit)
      break;
  }
  if (hist != NULL && write_history(hist) != 0)
    fprintf(stderr, "lugger repl: %s: cannot write the history\n", hist);
  free(hist);
  return 0;
}

/* Reads lines from a pipe or file: results only. */
static int run_pipe(lua_State *L, int failed) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) >= 0) {
    if (n > 0 && line[n - 1] == '\n')
      line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r')
      line[--n] = '\0';
    if (eval_line(L, line, &failed))
      break;
  }
  free(line);
  return failed ? 1 : 0;
}

int lg_cmd_repl(int argc, char **argv) {
  repl_args_t a = {0};
  a.copts = calloc((size_t)argc + 1, sizeof *a.copts);
  if (a.copts == NULL)
    return 2;
  int rc = 2;
  for (int k = 1; k < argc; k++) {
    const char *o = argv[k];
    if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
      usage(stdout);
      free(a.copts);
      return 0;
    }
    const char **slot = NULL;
    if (strcmp(o, "--sample") == 0)
      slot = &a.sample;
    else if (strcmp(o, "--format") == 0)
      slot = &a.format;
    else if (strcmp(o, "--params") == 0)
      slot = &a.params;
    else if (strcmp(o, "--compat") == 0)
      slot = &a.compat;
    else if (strcmp(o, "--call") == 0)
      slot = &a.call;
    else if (strcmp(o, "--tag") == 0)
      slot = &a.tag;
    if (slot != NULL || strcmp(o, "--compat-opt") == 0) {
      if (k + 1 >= argc) {
        fprintf(stderr, "lugger repl: %s needs a value\n", o);
        goto out;
      }
      const char *v = argv[++k];
      if (slot != NULL) {
        *slot = v;
      } else {
        const char *eq = strchr(v, '=');
        if (eq == NULL || eq == v) {
          fprintf(stderr,
                  "lugger repl: --compat-opt takes KEY=VALUE, not '%s'\n", v);
          goto out;
        }
        a.copts[a.ncopts++] = argv[k];
      }
    } else if (o[0] == '-' && o[1] == '-') {
      fprintf(stderr, "lugger repl: unknown option %s\n\n", o);
      usage(stderr);
      goto out;
    } else if (a.script == NULL) {
      a.script = o;
    } else {
      fprintf(stderr, "lugger repl: one script only (samples go with "
                      "--sample)\n");
      goto out;
    }
  }
  if (a.compat != NULL && strcmp(a.compat, "fluent-bit") != 0) {
    fprintf(stderr, "lugger repl: unknown compat '%s' (fluent-bit)\n",
            a.compat);
    goto out;
  }
  if ((a.compat == NULL) != (a.call == NULL) ||
      (a.compat == NULL && (a.ncopts > 0 || a.tag != NULL))) {
    fprintf(stderr, "lugger repl: --compat and --call go together; "
                    "--compat-opt and --tag need them\n");
    goto out;
  }

  a.interactive = isatty(STDIN_FILENO);
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "lugger repl: cannot create a Lua state\n");
    rc = 1;
    goto out;
  }
  luaL_openlibs(L);
  lg__lua_preload(L);
  if (luaL_loadbuffer(L, start_src, sizeof start_src - 1, "=lugger repl") !=
      0) {
    fprintf(stderr, "lugger repl: %s\n", lua_tostring(L, -1));
    lua_close(L);
    rc = 1;
    goto out;
  }
  push_opts(L, &a);
  if (lua_pcall(L, 1, 3, 0) != 0 || lua_isnil(L, 1)) {
    const char *e = lua_tostring(L, lua_isnil(L, 1) ? 2 : -1);
    fprintf(stderr, "lugger repl: %s\n", e ? e : "?");
    lua_close(L);
    rc = 2;
    goto out;
  }
  /* Stack: session, start message or nil, command names. */
  for (int k = 1; k <= (int)lua_objlen(L, 3) && ncommands < MAX_COMMANDS; k++) {
    lua_rawgeti(L, 3, k);
    const char *c = lua_tostring(L, -1);
    if (c != NULL && (commands[ncommands] = strdup(c)) != NULL)
      ncommands++;
    lua_pop(L, 1);
  }
  int failed = 0;
  if (lua_isstring(L, 2)) {
    size_t len;
    const char *m = lua_tolstring(L, 2, &len);
    print_text(m, len);
    failed = 1;
  }
  lua_settop(L, 1);
  if (a.interactive) {
    if (luaL_dostring(L, "require('jit').off()") != 0)
      lua_pop(L, 1);
    printf("lugger repl %s: :help lists the commands, Ctrl-D leaves\n",
           LUGGER_VERSION);
    eval_line(L, ":show", &failed);
    rc = run_terminal(L);
  } else {
    rc = run_pipe(L, failed);
  }
  lua_close(L);
  for (int k = 0; k < ncommands; k++)
    free(commands[k]);
  ncommands = 0;
out:
  free(a.copts);
  return rc;
}
