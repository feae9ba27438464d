/* Placeholder until the 'run' command lands; replaced by its module. */
#include <stdio.h>

#include "lg_cmd.h"

int lg_cmd_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "lugger run: not built yet\n");
  return 2;
}
