/* libFuzzer target: the state files read at start, as a crash or a disk
 * fault may leave them: the checkpoint store (checkpoints.json), its
 * journal (checkpoints.journal) and an output's request journal
 * (requests-<name>.json). The input is the three files' bytes, cut at
 * lines "=====" (missing parts: no such file). What must hold: each opens
 * (a bad file is set aside, never an error that stops the start) without
 * reading out of bounds, leaking or hitting undefined behaviour; what it
 * keeps is well formed (an entry has a path; a journaled request has
 * runs, each of at least one record, ids that are unique and not 0, and
 * as many records left as its runs hold); and the checkpoint store saved
 * from it opens again, not corrupt, with the same entries. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/lg_log.h"
#include "outputs/lg_req_journal.h"
#include "sources/tail/lg_checkpoint.h"

static char dir[64];
static uv_loop_t loop;

/* Empties the directory (files set aside included). */
static void clear_dir(void) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char p[512];
  while (d != NULL && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    unlink(p);
  }
  if (d != NULL)
    closedir(d);
}

static void put(const char *name, const char *data, size_t len) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
    abort();
}

static void check_store(lg_checkpoint_t *c) {
  for (size_t i = 0; i < lg_checkpoint_count(c); i++)
    if (lg_checkpoint_at(c, i)->path == NULL)
      abort();
}

static void fuzz_checkpoint(void) {
  char err[512];
  lg_checkpoint_t *c = lg_checkpoint_open(dir, err, sizeof err);
  if (c == NULL)
    abort(); /* a bad store is set aside, never a failed start */
  check_store(c);
  size_t n = lg_checkpoint_count(c);
  if (lg_checkpoint_save(c) != 0)
    abort();
  lg_checkpoint_t *again = lg_checkpoint_open(dir, err, sizeof err);
  if (again == NULL || lg_checkpoint_corrupt(again) ||
      lg_checkpoint_count(again) != n)
    abort(); /* what lugger writes, it reads back */
  for (size_t i = 0; i < n; i++) {
    const lg_checkpoint_entry_t *a = lg_checkpoint_at(c, i);
    const lg_checkpoint_entry_t *b = lg_checkpoint_find(again, a->dev, a->ino);
    if (b == NULL || strcmp(a->path, b->path) != 0 ||
        a->fingerprint != b->fingerprint || a->fp_len != b->fp_len ||
        a->offset != b->offset)
      abort();
  }
  lg_checkpoint_close(again);
  lg_checkpoint_close(c);
}

static void fuzz_requests(void) {
  char err[512];
  lg_rj_t *j = lg_rj_open(&loop, dir, "out", err, sizeof err);
  if (j == NULL)
    abort();
  lg_rj_entry_t *found = NULL;
  size_t n = lg_rj_take_found(j, &found);
  for (size_t i = 0; i < n; i++) {
    const lg_rj_entry_t *e = &found[i];
    uint64_t left = 0;
    if (e->id == 0 || e->nruns == 0 || e->note == NULL)
      abort();
    for (uint32_t k = 0; k < e->nruns; k++) {
      if (e->runs[k].count == 0)
        abort();
      left += e->runs[k].count;
    }
    if (left != e->left)
      abort();
    for (size_t k = 0; k < i; k++)
      if (found[k].id == e->id)
        abort(); /* settling one would settle the other */
  }
  /* Settling every entry found rewrites the file at the close. */
  for (size_t i = 0; i < n; i++) {
    lg_rj_settle(j, found[i].id, found[i].left);
    lg_rj_entry_free(&found[i]);
  }
  free(found);
  lg_rj_close(j);
  uv_run(&loop, UV_RUN_DEFAULT); /* frees the writes' jobs */
}

static void remove_dir(void) {
  clear_dir();
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (dir[0] == '\0') {
    if (getenv("FUZZ_STATE_LOG") == NULL) /* what lugger says of a file */
      lg_log_set_level((lg_log_level_t)(LG_LOG_ERROR + 1));
    snprintf(dir, sizeof dir, "/dev/shm/fuzz_state.XXXXXX");
    if (mkdtemp(dir) == NULL) {
      snprintf(dir, sizeof dir, "/tmp/fuzz_state.XXXXXX");
      if (mkdtemp(dir) == NULL)
        abort();
    }
    uv_loop_init(&loop);
    atexit(remove_dir);
  }
  static const char *const names[] = {"checkpoints.json", "checkpoints.journal",
                                      "requests-out.json"};
  static const char cut[] = "\n=====\n";
  const char *p = (const char *)data, *end = p + size;
  clear_dir();
  for (int k = 0; k < 3 && p != NULL; k++) {
    const char *m = memmem(p, (size_t)(end - p), cut, sizeof cut - 1);
    put(names[k], p, (size_t)((m ? m : end) - p));
    p = m ? m + sizeof cut - 1 : NULL;
  }
  fuzz_checkpoint();
  fuzz_requests();
  clear_dir();
  return 0;
}
