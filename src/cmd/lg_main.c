/*
 * lugger - a log collector for Kubernetes with Lua pipelines.
 * Entry point: dispatches to the subcommands in lg_cmd.h.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/lg_cmd.h"

static void usage(FILE *f) {
  fputs(
      "usage: lugger <command> [options]\n"
      "\n"
      "commands:\n"
      "  run -c FILE [--once]      run the collector\n"
      "  check -c FILE             validate a config and compile its scripts\n"
      "  test SCRIPT [SAMPLE...]   run a script over sample logs\n"
      "       [--format line|cri|docker|json|auto] [--routes] [--expect FILE]\n"
      "       [--params JSON] [--compat fluent-bit --call FN ...]\n"
      "  repl [SCRIPT] [--sample FILE] [--format F] [--params JSON]\n"
      "                            try a script on sample records "
      "interactively\n"
      "  lua FILE [ARGS...]        run a Lua file inside the host\n"
      "  lua --busted [ARGS...]    run busted specs (lugger.testing) inside "
      "the host\n"
      "  --version                 print the version\n"
      "\n"
      "lugger COMMAND --help shows all of a command's options.\n",
      f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("lugger %s\n", LUGGER_VERSION);
    return 0;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
      strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "run") == 0)
    return lg_cmd_run(argc - 1, argv + 1);
  if (strcmp(cmd, "check") == 0)
    return lg_cmd_check(argc - 1, argv + 1);
  if (strcmp(cmd, "test") == 0)
    return lg_cmd_test(argc - 1, argv + 1);
  if (strcmp(cmd, "repl") == 0)
    return lg_cmd_repl(argc - 1, argv + 1);
  if (strcmp(cmd, "lua") == 0)
    return lg_cmd_lua(argc - 1, argv + 1);
  fprintf(stderr, "lugger: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
