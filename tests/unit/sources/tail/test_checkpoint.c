/* Unit tests: lg_checkpoint (the checkpoint store): round trip, writes only
 * when changed, atomic replacement, corrupt files set aside. Real files in
 * a fresh temporary directory per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers/lg_test.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sources/tail/lg_checkpoint.h"
#include "sources/tail/lg_checkpoint_internal.h"

static char root[256];

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "%s", lg_test_tmpdir("lg_cp_"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  assert_int_equal(lg_test_rmtree(root), 0);
  return 0;
}

static void path_in(char *out, size_t n, const char *rel) {
  snprintf(out, n, "%s/%s", root, rel);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Names in dir other than "." and "..", joined by spaces, sorted. */
static void list_dir(const char *dir, char *out, size_t n) {
  struct dirent **ents;
  int k = scandir(dir, &ents, NULL, alphasort);
  assert_true(k >= 0);
  out[0] = '\0';
  for (int i = 0; i < k; i++) {
    if (strcmp(ents[i]->d_name, ".") != 0 &&
        strcmp(ents[i]->d_name, "..") != 0) {
      if (out[0])
        strncat(out, " ", n - strlen(out) - 1);
      strncat(out, ents[i]->d_name, n - strlen(out) - 1);
    }
    free(ents[i]);
  }
  free(ents);
}

/* Runs fn with stderr going to a file, returns what was written. */
static char captured[8192];
static void capture_begin(int *saved) {
  char p[300];
  path_in(p, sizeof p, "stderr.txt");
  fflush(stderr);
  *saved = dup(2);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  dup2(fd, 2);
  close(fd);
}
static void capture_end(int saved) {
  char p[300];
  path_in(p, sizeof p, "stderr.txt");
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  snprintf(captured, sizeof captured, "%s", read_file(p));
  unlink(p);
}

static lg_checkpoint_t *open_ok(const char *dir) {
  char err[256] = "";
  lg_checkpoint_t *c = lg_checkpoint_open(dir, err, sizeof err);
  if (c == NULL)
    fail_msg("lg_checkpoint_open(%s): %s", dir, err);
  return c;
}

static void test_round_trip(void **state) {
  (void)state;
  char dir[300];
  path_in(dir, sizeof dir, "state/nested");
  lg_checkpoint_t *c = open_ok(dir); /* created, with parents */
  struct stat st;
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0750);
  assert_int_equal(lg_checkpoint_count(c), 0);

  lg_checkpoint_entry_t e1 = {"/var/log/a.log",
                              2049,
                              1234,
                              UINT64_C(0x9f00000000000001),
                              1024,
                              52311,
                              0};
  lg_checkpoint_entry_t e2 = {"/var/log/b \"quoted\"\n.log", 7, 99, 0, 0, 0, 0};
  /* Values above 2^53 must come back exactly. */
  lg_checkpoint_entry_t e3 = {"/x/y",     UINT64_MAX, (UINT64_C(1) << 60) + 3,
                              UINT64_MAX, 17,         (UINT64_C(1) << 53) + 1,
                              0};
  assert_int_equal(lg_checkpoint_set(c, &e1), 0);
  assert_int_equal(lg_checkpoint_set(c, &e2), 0);
  assert_int_equal(lg_checkpoint_set(c, &e3), 0);
  /* A file name that is not UTF-8 (Latin-1 "café", a cut sequence) comes
   * back as it was, not with U+FFFD for its bytes. */
  lg_checkpoint_entry_t e4 = {"/var/log/caf\xe9-\xc3.log", 7, 100, 0, 0, 5, 0};
  assert_int_equal(lg_checkpoint_set(c, &e4), 0);
  /* Update in place: keyed by dev+ino. */
  e1.offset = 60000;
  e1.path = "/var/log/a.log.1";
  assert_int_equal(lg_checkpoint_set(c, &e1), 0);
  assert_int_equal(lg_checkpoint_count(c), 4);
  assert_int_equal(lg_checkpoint_save(c), 0);
  lg_checkpoint_close(c);

  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_count(c), 4);
  assert_string_equal(lg_checkpoint_find(c, 7, 100)->path,
                      "/var/log/caf\xe9-\xc3.log");
  const lg_checkpoint_entry_t *g = lg_checkpoint_find(c, 2049, 1234);
  assert_non_null(g);
  assert_string_equal(g->path, "/var/log/a.log.1");
  assert_true(g->fingerprint == UINT64_C(0x9f00000000000001));
  assert_int_equal(g->fp_len, 1024);
  assert_int_equal(g->offset, 60000);
  g = lg_checkpoint_find(c, 7, 99);
  assert_non_null(g);
  assert_string_equal(g->path, "/var/log/b \"quoted\"\n.log");
  assert_int_equal(g->fp_len, 0);
  g = lg_checkpoint_find(c, UINT64_MAX, (UINT64_C(1) << 60) + 3);
  assert_non_null(g);
  assert_true(g->fingerprint == UINT64_MAX);
  assert_true(g->offset == (UINT64_C(1) << 53) + 1);
  assert_null(lg_checkpoint_find(c, 2049, 1235));

  lg_checkpoint_remove(c, 7, 99);
  assert_null(lg_checkpoint_find(c, 7, 99));
  assert_int_equal(lg_checkpoint_save(c), 0);
  lg_checkpoint_close(c);
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_count(c), 3);
  assert_null(lg_checkpoint_find(c, 7, 99));
  assert_non_null(lg_checkpoint_find(c, 2049, 1234));

  /* The file is the documented format. */
  char *text = read_file(lg_checkpoint_file(c));
  assert_non_null(strstr(text, "\"version\":1"));
  assert_non_null(strstr(text, "{\"path\":\"/var/log/a.log.1\",\"dev\":2049,"
                               "\"ino\":1234,\"fingerprint\":"
                               "\"9f00000000000001\",\"fp_len\":1024,"
                               "\"offset\":60000}"));
  lg_checkpoint_close(c);
}

static void test_writes_only_when_changed(void **state) {
  (void)state;
  char dir[300], file[300];
  path_in(dir, sizeof dir, "s");
  path_in(file, sizeof file, "s/checkpoints.json");
  lg_checkpoint_t *c = open_ok(dir);
  assert_int_equal(lg_checkpoint_save(c), 0); /* nothing to write */
  struct stat st;
  assert_int_equal(stat(file, &st), -1);

  lg_checkpoint_entry_t e = {"/a", 1, 2, 3, 4, 5, 0};
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_int_equal(stat(file, &st), 0);
  ino_t first = st.st_ino;

  /* The same values again: no write (a rename would change the inode). */
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_int_equal(stat(file, &st), 0);
  assert_int_equal(st.st_ino, first);

  e.offset = 6;
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_int_equal(stat(file, &st), 0);
  assert_int_not_equal(st.st_ino, first);
  lg_checkpoint_close(c);
}

static void test_atomic(void **state) {
  (void)state;
  char dir[300], tmp[300], names[512];
  path_in(dir, sizeof dir, "s");
  path_in(tmp, sizeof tmp, "s/checkpoints.json.tmp");
  lg_checkpoint_t *c = open_ok(dir);
  lg_checkpoint_entry_t e = {"/a", 1, 2, 3, 4, 100, 0};
  for (int i = 0; i < 20; i++) {
    e.offset += 10;
    assert_int_equal(lg_checkpoint_set(c, &e), 0);
    assert_int_equal(lg_checkpoint_save(c), 0);
    list_dir(dir, names, sizeof names);
    /* no temp left */
    assert_string_equal(names, "checkpoints.journal checkpoints.json");
  }
  char *before = strdup(read_file(lg_checkpoint_file(c)));

  /* A save that fails midway (the temp name is taken by a directory)
   * leaves the old store untouched and reports the error. */
  assert_int_equal(mkdir(tmp, 0700), 0);
  e.offset = 999;
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
  int saved;
  capture_begin(&saved);
  int rc = lg_checkpoint_save(c);
  capture_end(saved);
  assert_true(rc < 0);
  assert_non_null(strstr(captured, "\"level\":\"error\""));
  assert_non_null(strstr(captured, "checkpoints.json"));
  assert_string_equal(read_file(lg_checkpoint_file(c)), before);
  free(before);
  assert_int_equal(rmdir(tmp), 0);
  /* Still dirty: the next save writes it. */
  assert_int_equal(lg_checkpoint_save(c), 0);
  lg_checkpoint_close(c);

  /* A temp file left by a crash is removed at open; the store is read. */
  lg_test_write_file(tmp, "{\"version\":1,\"fil");
  c = open_ok(dir);
  list_dir(dir, names, sizeof names);
  assert_string_equal(names, "checkpoints.journal checkpoints.json");
  const lg_checkpoint_entry_t *g = lg_checkpoint_find(c, 1, 2);
  assert_non_null(g);
  assert_int_equal(g->offset, 999);
  lg_checkpoint_close(c);
}

/* Changes after the last save survive a close without save (a killed
 * process) through the journal; lines cut short or of an older
 * generation are skipped. */
static void test_journal(void **state) {
  (void)state;
  char dir[300], jfile[300];
  path_in(dir, sizeof dir, "j");
  path_in(jfile, sizeof jfile, "j/checkpoints.journal");
  lg_checkpoint_t *c = open_ok(dir);
  lg_checkpoint_entry_t a = {"/a", 1, 2, 3, 4, 100, 0};
  lg_checkpoint_entry_t b = {"/b", 1, 3, 5, 4, 50, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_set(c, &b), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_string_equal(read_file(jfile), ""); /* emptied by the save */
  a.offset = 700;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  lg_checkpoint_remove(c, 1, 3);
  lg_checkpoint_entry_t d = {"/d", 1, 9, 7, 4, 30, 0};
  assert_int_equal(lg_checkpoint_set(c, &d), 0);
  lg_checkpoint_close(c); /* no save: as if killed */

  int saved;
  capture_begin(&saved);
  c = open_ok(dir);
  capture_end(saved);
  assert_non_null(strstr(captured, "3 checkpoint changes"));
  assert_non_null(strstr(captured, "600 bytes further on"));
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 700);
  assert_null(lg_checkpoint_find(c, 1, 3));
  assert_int_equal(lg_checkpoint_find(c, 1, 9)->offset, 30);
  assert_int_equal(lg_checkpoint_save(c), 0); /* folds the journal in */
  a.offset = 800;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  lg_checkpoint_close(c);

  /* A line of the generation before the last save, and a line cut short,
   * are skipped; the whole line before them applies. */
  char *j = strdup(read_file(jfile));
  char text[2048];
  snprintf(text, sizeof text,
           "%s{\"gen\":1,\"set\":{\"path\":\"/a\",\"dev\":1,\"ino\":2,"
           "\"fingerprint\":\"0000000000000003\",\"fp_len\":4,"
           "\"offset\":5000}}\n{\"gen\":2,\"set\":{\"path\":\"/a\",\"dev\":1,",
           j);
  size_t cut_at =
      strlen(text) - strlen("{\"gen\":2,\"set\":{\"path\":\"/a\",\"dev\":1,");
  free(j);
  lg_test_write_file(jfile, text);
  capture_begin(&saved);
  c = open_ok(dir);
  capture_end(saved);
  /* What was skipped, and where: the journal and the byte. */
  char want[400];
  snprintf(want, sizeof want,
           "%s: 1 lines that do not parse skipped, the first at byte %zu of "
           "%zu",
           jfile, cut_at, strlen(text));
  assert_non_null(strstr(captured, want));
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 800);
  assert_int_equal(lg_checkpoint_corrupt(c), 0);
  lg_checkpoint_close(c);
}

/* A removed entry past offset 0 leaves a note of where its file ended
 * (fingerprint, offset): kept across a kill (its journal line), across a
 * save, at most LG_CHECKPOINT_DONE_MAX of the newest, not past
 * LG_CHECKPOINT_DONE_KEEP_S; an entry at 0 leaves none. */
static void test_done_notes(void **state) {
  (void)state;
  char dir[300], file[300];
  path_in(dir, sizeof dir, "d");
  path_in(file, sizeof file, "d/checkpoints.json");
  lg_checkpoint_t *c = open_ok(dir);
  lg_checkpoint_entry_t a = {"/a", 1, 2, 0xabc, 4, 100, 0};
  lg_checkpoint_entry_t z = {"/z", 1, 3, 0xdef, 4, 0, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_set(c, &z), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  lg_checkpoint_remove(c, 1, 2);
  lg_checkpoint_remove(c, 1, 3);
  assert_int_equal(lg_checkpoint_done_count(c), 1);
  lg_checkpoint_close(c); /* no save: as if killed */

  c = open_ok(dir); /* the journal's removal leaves the note again */
  assert_null(lg_checkpoint_find(c, 1, 2));
  assert_int_equal(lg_checkpoint_done_count(c), 1);
  const lg_checkpoint_done_t *d = lg_checkpoint_done_at(c, 0);
  assert_int_equal(d->fingerprint, 0xabc);
  assert_int_equal(d->offset, 100);
  assert_null(lg_checkpoint_done_at(c, 1));
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_non_null(
      strstr(read_file(file), "\"done\":[[\"0000000000000abc\",100,"));
  lg_checkpoint_close(c);

  c = open_ok(dir); /* from the store */
  assert_int_equal(lg_checkpoint_done_count(c), 1);
  assert_int_equal(lg_checkpoint_done_at(c, 0)->offset, 100);
  /* The newest LG_CHECKPOINT_DONE_MAX are kept. */
  for (uint64_t i = 0; i < LG_CHECKPOINT_DONE_MAX; i++) {
    lg_checkpoint_entry_t e = {"/e", 2, 10 + i, 0x1000 + i, 4, 10 + i, 0};
    assert_int_equal(lg_checkpoint_set(c, &e), 0);
    lg_checkpoint_remove(c, 2, 10 + i);
  }
  assert_int_equal(lg_checkpoint_done_count(c), LG_CHECKPOINT_DONE_MAX);
  assert_int_equal(lg_checkpoint_done_at(c, 0)->fingerprint, 0x1000);
  lg_checkpoint_close(c);

  /* Notes older than LG_CHECKPOINT_DONE_KEEP_S found at the open (the
   * collector was down that long) are all kept for the start to tell, and
   * written again; once the collector has run that long they go. */
  char text[512];
  snprintf(text, sizeof text,
           "{\"version\":1,\"gen\":7,\"files\":[],\"done\":"
           "[[\"0000000000000001\",5,1000],[\"0000000000000002\",6,2000],"
           "[\"000000000000000x\",5,%lld],[\"0000000000000003\",5,1e300]]}\n",
           (long long)time(NULL));
  lg_test_write_file(file, text);
  c = open_ok(dir);
  /* The bad ones (not hex, a time no int64_t holds) skipped. */
  assert_int_equal(lg_checkpoint_done_count(c), 2);
  assert_int_equal(lg_checkpoint_done_at(c, 0)->fingerprint, 1);
  assert_int_equal(lg_checkpoint_done_at(c, 1)->offset, 6);
  assert_int_equal(lg_checkpoint_corrupt(c), 0);
  lg_checkpoint_entry_t b = {"/b", 1, 4, 0x5, 4, 9, 0};
  assert_int_equal(lg_checkpoint_set(c, &b), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_non_null(strstr(read_file(file),
                         "\"done\":[[\"0000000000000001\",5,1000],"
                         "[\"0000000000000002\",6,2000]]"));
  /* An hour of running later: only a note made since is kept. */
  c->opened = (int64_t)time(NULL) - LG_CHECKPOINT_DONE_KEEP_S - 1;
  lg_checkpoint_remove(c, 1, 4);
  assert_int_equal(lg_checkpoint_done_count(c), 1);
  assert_int_equal(lg_checkpoint_done_at(c, 0)->fingerprint, 0x5);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_non_null(
      strstr(read_file(file), "\"done\":[[\"0000000000000005\",9,"));
  lg_checkpoint_close(c);
}

/* The sent mark: journaled at once (a killed process keeps it), kept by
 * saves while it is past the offset, never moved back by an ack, and
 * dropped when the entry is another file or is read again from 0. */
static void test_sent_mark(void **state) {
  (void)state;
  char dir[300], jfile[300];
  path_in(dir, sizeof dir, "m");
  path_in(jfile, sizeof jfile, "m/checkpoints.journal");
  lg_checkpoint_t *c = open_ok(dir);
  lg_checkpoint_entry_t a = {"/a", 1, 2, 3, 4, 100, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  /* No entry, another fingerprint, not past the offset: nothing. */
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 7, 3, 500), 0);
  assert_null(lg_checkpoint_find(c, 1, 7));
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 9, 500), 0);
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 3, 100), 0);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 0);
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 3, 400), 0);
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 3, 300), 0); /* older */
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 400);
  /* Marks wait for a flush: one write for all of a request's. */
  assert_null(strstr(read_file(jfile), "\"sent\""));
  lg_checkpoint_flush(c);
  assert_non_null(strstr(read_file(jfile), "\"sent\":400"));
  assert_null(strstr(read_file(jfile), "\"sent\":300"));
  /* An ack short of it keeps the mark. */
  a.offset = 250;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 400);
  lg_checkpoint_close(c); /* killed: the journal has it */

  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 250);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 400);
  assert_int_equal(lg_checkpoint_save(c), 0); /* the store has it too */
  assert_non_null(strstr(read_file(lg_checkpoint_file(c)), "\"sent\":400"));
  lg_checkpoint_close(c);
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 400);
  /* Acked past it: no longer written. */
  a.offset = 450;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_null(strstr(read_file(lg_checkpoint_file(c)), "\"sent\""));
  /* Read again from 0 (truncated), or another file on the inode: the old
   * mark says nothing about the new bytes. */
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 3, 900), 0);
  a.offset = 0;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 0);
  assert_int_equal(lg_checkpoint_set_sent(c, 1, 2, 3, 900), 0);
  a.fingerprint = 4;
  a.offset = 10;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->sent, 0);
  lg_checkpoint_close(c);
}

static void check_corrupt(const char *text, const char *why) {
  char dir[300], file[300], names[512];
  path_in(dir, sizeof dir, "c");
  path_in(file, sizeof file, "c/checkpoints.json");
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir %s", dir, dir);
  assert_int_equal(system(cmd), 0);
  lg_test_write_file(file, text);

  int saved;
  capture_begin(&saved);
  lg_checkpoint_t *c = open_ok(dir);
  capture_end(saved);
  assert_int_equal(lg_checkpoint_count(c), 0);
  assert_int_equal(lg_checkpoint_corrupt(c), 1);
  assert_non_null(strstr(captured, "\"level\":\"error\""));
  assert_non_null(strstr(captured, file));
  assert_non_null(strstr(captured, why));
  assert_non_null(strstr(captured, "read again from its start"));
  list_dir(dir, names, sizeof names);
  /* the (empty) journal and the set-aside file */
  assert_true(
      strncmp(names, "checkpoints.journal checkpoints.json.corrupt-", 45) == 0);
  assert_null(strchr(names + 20, ' '));
  char aside[900];
  snprintf(aside, sizeof aside, "%s/%s", dir, names + 20);
  assert_string_equal(read_file(aside), text); /* kept as it was */

  /* The store works afterwards. */
  lg_checkpoint_entry_t e = {"/a", 1, 2, 3, 4, 5, 0};
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  lg_checkpoint_close(c);
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_count(c), 1);
  lg_checkpoint_close(c);
}

/* Background saves (lg_checkpoint_save_async): changes made while the
 * store is being written are in the journal afterwards, whether the save
 * succeeded or failed, so that a killed process (close without a save)
 * finds them; one save at a time; a synchronous save or a close waits for
 * the one in flight. */
static void test_save_async(void **state) {
  (void)state;
  char dir[300], file[300], jfile[300], tmp[300];
  path_in(dir, sizeof dir, "bg");
  path_in(file, sizeof file, "bg/checkpoints.json");
  path_in(jfile, sizeof jfile, "bg/checkpoints.journal");
  path_in(tmp, sizeof tmp, "bg/checkpoints.json.tmp");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);

  /* Success: the snapshot is the store; the change made meanwhile stays
   * in the journal (and only it), with the new store's generation. */
  lg_checkpoint_t *c = open_ok(dir);
  lg_checkpoint_entry_t a = {"/a", 1, 2, 3, 4, 100, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), -EBUSY);
  a.offset = 200;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  lg_checkpoint_entry_t b = {"/b", 1, 3, 5, 4, 50, 0};
  assert_int_equal(lg_checkpoint_set(c, &b), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_non_null(strstr(read_file(file), "\"offset\":100"));
  assert_null(strstr(read_file(file), "/b"));
  const char *j = read_file(jfile);
  assert_non_null(strstr(j, "{\"gen\":1,\"set\":{\"path\":\"/a\""));
  assert_non_null(strstr(j, "\"offset\":200"));
  assert_non_null(strstr(j, "{\"gen\":1,\"set\":{\"path\":\"/b\""));
  assert_null(strstr(j, "\"offset\":100"));
  lg_checkpoint_close(c); /* as if killed */
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 200);
  assert_int_equal(lg_checkpoint_find(c, 1, 3)->offset, 50);

  /* Failure (the temp file's name is taken by a directory): the store on
   * disk stays, and the changes made meanwhile are journaled again with
   * its generation, so that they still apply after a kill. */
  assert_int_equal(mkdir(tmp, 0700), 0);
  a.offset = 300;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0);
  a.offset = 400;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  int saved;
  capture_begin(&saved);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  capture_end(saved);
  assert_non_null(strstr(captured, "create temp file: Is a directory"));
  assert_null(strstr(read_file(file), "\"offset\":300"));
  lg_checkpoint_close(c);
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 400);
  assert_int_equal(rmdir(tmp), 0);
  /* The failed save's generation (2) is in the journal: the next store is
   * newer than it, so a kill right after that save skips those lines. */
  a.offset = 450;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_non_null(strstr(read_file(file), "{\"version\":1,\"gen\":3,"));

  /* A synchronous save waits for the one in flight, then writes what
   * changed after its snapshot; a close waits too. */
  a.offset = 500;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0);
  a.offset = 600;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save(c), 0);
  assert_non_null(strstr(read_file(file), "\"offset\":600"));
  assert_string_equal(read_file(jfile), "");
  a.offset = 700;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0);
  lg_checkpoint_close(c);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* frees the job */
  assert_non_null(strstr(read_file(file), "\"offset\":700"));
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 700);
  lg_checkpoint_close(c);

  /* Killed while a save was being written: the store on disk is still
   * the older one (generation g), and the lines made after the newer
   * snapshot (g + 1) follow that store's lines in the journal: all apply,
   * in order; a line of an older generation is skipped. */
  unsigned g = 0;
  assert_int_equal(sscanf(read_file(file), "{\"version\":1,\"gen\":%u,", &g),
                   1);
  char text[1024];
  snprintf(text, sizeof text,
           "{\"gen\":%u,\"set\":{\"path\":\"/a\",\"dev\":1,\"ino\":2,"
           "\"fingerprint\":\"0000000000000003\",\"fp_len\":4,"
           "\"offset\":800}}\n"
           "{\"gen\":%u,\"set\":{\"path\":\"/a\",\"dev\":1,\"ino\":2,"
           "\"fingerprint\":\"0000000000000003\",\"fp_len\":4,"
           "\"offset\":900}}\n"
           "{\"gen\":%u,\"set\":{\"path\":\"/a\",\"dev\":1,\"ino\":2,"
           "\"fingerprint\":\"0000000000000003\",\"fp_len\":4,"
           "\"offset\":50}}\n",
           g, g + 1, g - 1);
  lg_test_write_file(jfile, text);
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 900);
  lg_checkpoint_close(c);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* What lg_checkpoint_save_then's callback saw: its calls, its result,
 * and whether the store on disk held `then_want` then. */
static int then_calls, then_rc, then_held;
static const char *then_file, *then_want;
static void on_then(void *ud, int rc) {
  (void)ud;
  then_calls++;
  then_rc = rc;
  then_held =
      then_want != NULL && strstr(read_file(then_file), then_want) != NULL;
}

/* The last save before a close (lg_checkpoint_save_then): on the
 * threadpool; with a save in flight, a save after it; the callback only
 * once the store on disk holds every change made before the call, so an
 * earlier save never overwrites a later one. A change made after that
 * second save's snapshot (taken once the first one ended) still applies
 * after a kill: the journal line and the store have one generation. */
static void test_save_then(void **state) {
  (void)state;
  char dir[300], file[300];
  path_in(dir, sizeof dir, "then");
  path_in(file, sizeof file, "then/checkpoints.json");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_checkpoint_t *c = open_ok(dir);
  then_file = file;
  then_want = NULL; /* no store file yet */
  then_calls = 0;

  /* Nothing to save: at once. */
  assert_int_equal(lg_checkpoint_save_then(c, &loop, on_then, NULL), 0);
  assert_int_equal(then_calls, 1);
  assert_int_equal(then_rc, 0);

  /* A save in flight: the last one follows it. */
  lg_checkpoint_entry_t a = {"/a", 1, 2, 3, 4, 100, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0);
  a.offset = 200;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  then_want = "\"offset\":200";
  assert_int_equal(lg_checkpoint_save_then(c, &loop, on_then, NULL), 0);
  assert_int_equal(lg_checkpoint_save_then(c, &loop, on_then, NULL), -EBUSY);
  assert_int_equal(then_calls, 1); /* not from within */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(then_calls, 2);
  assert_int_equal(then_rc, 0);
  assert_int_equal(then_held, 1);
  a.offset = 300;
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  lg_checkpoint_close(c); /* as if killed */
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 300);

  /* Many saves asked while changes go on, some while one is in flight,
   * the loop turning now and then: the last save leaves the last state,
   * in the store and after a reopen. */
  for (uint64_t i = 1; i <= 60; i++) {
    a.offset = 1000 + i;
    assert_int_equal(lg_checkpoint_set(c, &a), 0);
    if (i % 3 == 0) {
      int rc = lg_checkpoint_save_async(c, &loop);
      assert_true(rc == 0 || rc == -EBUSY);
    }
    if (i % 7 == 0)
      uv_run(&loop, UV_RUN_NOWAIT);
  }
  then_want = "\"offset\":1060";
  assert_int_equal(lg_checkpoint_save_then(c, &loop, on_then, NULL), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(then_calls, 3);
  assert_int_equal(then_held, 1);
  lg_checkpoint_close(c);
  assert_non_null(strstr(read_file(file), "\"offset\":1060"));
  c = open_ok(dir);
  assert_int_equal(lg_checkpoint_find(c, 1, 2)->offset, 1060);
  lg_checkpoint_close(c);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_corrupt(void **state) {
  (void)state;
  check_corrupt("{\"version\":1,\"files\":[{\"path\":\"/a\",",
                "not valid JSON (at byte 34 of 35)"); /* cut short */
  check_corrupt("", "not valid JSON (at byte 0 of 0)");
  check_corrupt("\x01garbage", "not valid JSON (at byte 1 of 8)");
  check_corrupt("{\"version\":2,\"files\":[]}", "not a version 1");
  check_corrupt("[1,2]", "not a version 1");
  check_corrupt("{\"version\":1,\"files\":[{\"path\":\"/a\",\"dev\":1,"
                "\"ino\":2,\"fingerprint\":\"zz\",\"fp_len\":1,\"offset\":0}]}",
                "entry 0 of 1 is malformed");
  check_corrupt("{\"version\":1,\"files\":[{\"path\":\"/a\",\"dev\":-1,"
                "\"ino\":2,\"fingerprint\":\"0000000000000000\",\"fp_len\":1,"
                "\"offset\":0}]}",
                "entry 0 of 1 is malformed");
}

/* Entries are found by device+inode through an index: 5,000 entries on
 * two devices, every third removed (the last entry moves into its place),
 * some set again; each found with its own offset, the removed ones not,
 * before and after a save and reopen. Two entries whose index keys
 * collide (device 0, inode 5 ^ K and device 1, inode 5, K the key's
 * multiplier) are both found, and each after the other's removal. */
static void test_find_many(void **state) {
  (void)state;
  char dir[300];
  path_in(dir, sizeof dir, "state");
  lg_checkpoint_t *c = open_ok(dir);
  enum { N = 5000 };
  for (uint64_t i = 0; i < N; i++) {
    lg_checkpoint_entry_t e = {"/l/f", 1 + i % 2, 1000 + i, i, 8, 10 * i, 0};
    assert_int_equal(lg_checkpoint_set(c, &e), 0);
  }
  for (uint64_t i = 0; i < N; i += 3)
    lg_checkpoint_remove(c, 1 + i % 2, 1000 + i);
  for (uint64_t i = 0; i < N; i += 9) { /* removed, then set again */
    lg_checkpoint_entry_t e = {"/l/g", 1 + i % 2, 1000 + i, i, 8, 7 * i, 0};
    assert_int_equal(lg_checkpoint_set(c, &e), 0);
  }
  for (int pass = 0; pass < 2; pass++) {
    size_t n = 0;
    for (uint64_t i = 0; i < N; i++) {
      const lg_checkpoint_entry_t *g =
          lg_checkpoint_find(c, 1 + i % 2, 1000 + i);
      assert_null(lg_checkpoint_find(c, 2 - i % 2, 1000 + i)); /* other dev */
      if (i % 9 == 0) {
        assert_non_null(g);
        assert_int_equal(g->offset, 7 * i);
      } else if (i % 3 == 0) {
        assert_null(g);
        continue;
      } else {
        assert_non_null(g);
        assert_int_equal(g->offset, 10 * i);
      }
      n++;
    }
    assert_int_equal(lg_checkpoint_count(c), n);
    assert_int_equal(lg_checkpoint_save(c), 0);
    lg_checkpoint_close(c);
    c = open_ok(dir);
  }

  const uint64_t K = UINT64_C(0x9e3779b97f4a7c15);
  lg_checkpoint_entry_t a = {"/l/a", 1, 5, 1, 8, 111, 0};
  lg_checkpoint_entry_t b = {"/l/b", 0, 5 ^ K, 2, 8, 222, 0};
  assert_int_equal(lg_checkpoint_set(c, &a), 0);
  assert_int_equal(lg_checkpoint_set(c, &b), 0);
  assert_int_equal(lg_checkpoint_find(c, 1, 5)->offset, 111);
  assert_int_equal(lg_checkpoint_find(c, 0, 5 ^ K)->offset, 222);
  lg_checkpoint_remove(c, 1, 5);
  assert_null(lg_checkpoint_find(c, 1, 5));
  assert_int_equal(lg_checkpoint_find(c, 0, 5 ^ K)->offset, 222);
  assert_int_equal(lg_checkpoint_find(c, 2, 1001)->offset, 10);
  lg_checkpoint_close(c);
}

static void test_unusable_state_dir(void **state) {
  (void)state;
  char file[300], dir[300];
  path_in(file, sizeof file, "plain");
  lg_test_write_file(file, "x");
  path_in(dir, sizeof dir, "plain/sub");
  char err[256] = "";
  assert_null(lg_checkpoint_open(file, err, sizeof err));
  assert_non_null(strstr(err, file));
  err[0] = '\0';
  assert_null(lg_checkpoint_open(dir, err, sizeof err));
  assert_non_null(strstr(err, dir));
  lg_checkpoint_close(NULL); /* NULL-safe */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_writes_only_when_changed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_atomic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sent_mark, setup, teardown),
      cmocka_unit_test_setup_teardown(test_done_notes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_save_async, setup, teardown),
      cmocka_unit_test_setup_teardown(test_save_then, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
      cmocka_unit_test_setup_teardown(test_find_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unusable_state_dir, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
