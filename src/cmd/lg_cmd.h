/*
 * lg_cmd.h - the subcommands of the lugger binary. Each takes the
 * arguments after its name (argv[0] is the subcommand) and returns the
 * process exit code.
 */
#ifndef LG_CMD_H
#define LG_CMD_H

int lg_cmd_run(int argc, char **argv);   /* lg_cmd_run.c */
int lg_cmd_check(int argc, char **argv); /* lg_cmd_check.c */
int lg_cmd_test(int argc, char **argv);  /* lg_cmd_test.c */
int lg_cmd_lua(int argc, char **argv);   /* lg_cmd_lua.c */
int lg_cmd_repl(int argc, char **argv);  /* lg_cmd_repl.c */

#endif
