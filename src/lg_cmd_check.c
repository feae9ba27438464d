/* Placeholder until the 'check' command lands; replaced by its module. */
#include <stdio.h>

#include "lg_cmd.h"

int lg_cmd_check(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "lugger check: not built yet\n");
  return 2;
}
