/*
 * The `stdout` output: JSON lines on standard output (fd 1), for
 * `kubectl logs` of a sidecar and for the quick start. It shares the file
 * output's writer (lg_output_file.c), so writes happen in the threadpool
 * and a stalled reader never blocks the loop.
 */
#include "outputs/lg_output.h"

static const lg_option_t stdout_options[] = {
    {.name = NULL},
};

const lg_output_type_t lg__output_stdout = {
    .name = "stdout",
    .options = stdout_options,
    .init = lg__output_fd_init_stdout,
    .submit = lg__output_fd_submit,
    .reopen = NULL,
    .exit = lg__output_fd_exit,
    .abandon = lg__output_fd_abandon,
};
