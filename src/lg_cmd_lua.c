/* Placeholder until the 'lua' command lands; replaced by its module. */
#include <stdio.h>

#include "lg_cmd.h"

int lg_cmd_lua(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "lugger lua: not built yet\n");
  return 2;
}
