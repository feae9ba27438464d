/* Placeholder until the 'test' command lands; replaced by its module. */
#include <stdio.h>

#include "lg_cmd.h"

int lg_cmd_test(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "lugger test: not built yet\n");
  return 2;
}
