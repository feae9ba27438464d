/*
 * lg_source.h - the source interface: what the engine knows of a source.
 *
 * A source type (file, kubernetes, later forward) is a struct of callbacks
 * in a static registry (lg_source.c); the engine creates one lg_sources_t,
 * adds each configured source by id, and otherwise only pauses, resumes,
 * acks and closes the set. It never names a type.
 *
 * Records reach the engine as batches (lg_batch.h) through the host's
 * on_batch: a source fills batches it takes from the host's get_batch, one
 * "lane" per ordered stream of records (a file and the files that follow
 * it by rotation; a network connection), and sets source_id, file_key
 * (unique per stream position holder: acks are queued by it), lane and
 * checkpoint_offset. A network source fits the same way: records arrive
 * framed, it fills batches and keeps, by file_key, what it must answer
 * once they are delivered (e.g. a forward chunk's ack).
 *
 * Acks: when every record of a batch, and of every earlier batch with its
 * file_key, is delivered to every output it was routed to, dropped on
 * purpose or dead-lettered, the engine calls lg_sources_ack for it, in
 * order: a file source moves its checkpoint, a network source answers its
 * peer. A batch the engine gives up without delivering it (a stuck
 * script's file, a shutdown past its timeout) is lg_sources_drop: its
 * records are read (or resent) again after a restart.
 *
 * Sources that share a service (the file and kubernetes types share one
 * tailer and checkpoint store) name a group type: the set creates one
 * instance of each group type in the registry, and set-wide operations
 * (start, pause, flush, close) go to the groups once, not per source.
 *
 * All functions run on the loop thread.
 */
#ifndef LG_SOURCE_H
#define LG_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/lg_config.h"
#include "pipeline/lg_batch.h"

typedef struct lg_sources lg_sources_t;
typedef struct lg_source lg_source_t;

/* What the engine gives every source. */
typedef struct lg_source_host {
  uv_loop_t *loop;
  const char *state_dir;           /* settings.state_dir */
  uint64_t rescan_interval_ms;     /* settings.rescan_interval */
  uint64_t checkpoint_interval_ms; /* settings.checkpoint_interval */
  uint64_t close_inactive_ms;      /* settings.close_inactive */
  size_t batch_bytes;              /* a batch is handed on at about this size */
  /* Takes a batch of records, which the engine owns from then on. */
  void (*on_batch)(void *ud, lg_batch_t *b);
  /* Gives an empty batch to fill; NULL when out of memory. */
  lg_batch_t *(*get_batch)(void *ud);
  /* What a source holds outside batches (a file's line in progress)
   * changed by `delta` bytes: charged to the memory budget like batches.
   * May be NULL. */
  void (*held_bytes)(void *ud, int64_t delta);
  /* Releases a hold on a config (lg_source_spec_t.conf_hold). */
  void (*release_conf)(void *ud, void *conf_hold);
  /* A file is read from its checkpoint, byte `offset`: its records before
   * it, fingerprint `fingerprint`, were delivered (or dropped) and are not
   * read again (lg_output_file_resumed says why outputs care). May be
   * NULL. */
  void (*file_resumed)(void *ud, uint64_t fingerprint, uint64_t offset);
  /* A file whose batches will have fingerprint `fingerprint` is opened;
   * the hashes of its first 1..n bytes are prefix[0..n-1]
   * (lg_output_file_prefixes says why outputs care). May be NULL. */
  void (*file_prefixes)(void *ud, uint64_t fingerprint, const uint64_t *prefix,
                        uint32_t n);
  /* Whether anyone waits for file_prefixes now: 0 = no (the source then
   * skips hashing a file's prefixes), else yes. Asked before each file
   * that file_prefixes would be told of. NULL: always. */
  int (*prefixes_wanted)(void *ud);
  void *ud;
} lg_source_host_t;

/* A source to start. */
typedef struct lg_source_spec {
  uint32_t id;                /* engine source id, the batches' source_id;
                                 never reused for another source */
  const lg_config_t *conf;    /* the config it comes from */
  const lg_conf_source_t *sc; /* its entry in conf */
  int pipeline;               /* its pipeline, an index into conf's */
  /* The caller's hold on conf, released (host->release_conf) once the
   * source no longer needs it; NULL when conf outlives the set. */
  void *conf_hold;
} lg_source_spec_t;

/* A shared service of several source types (one instance per set). */
typedef struct lg_source_group_type {
  const char *name;
  /* Creates the instance for `set`; NULL with a reason in err. */
  void *(*create)(lg_sources_t *set, const lg_source_host_t *h, char *err,
                  size_t errlen);
  int (*start)(void *g);  /* after the first sources */
  void (*pause)(void *g); /* memory budget reached */
  void (*resume)(void *g);
  /* While paused: what the group holds outside batches (held_bytes) fills
   * the budget with no batch in flight; on != 0 lets it read just enough
   * to hand that on (lg_sources_drain). NULL: it holds nothing. */
  void (*drain)(void *g, int on);
  int (*idle)(const void *g);        /* nothing left to read now */
  int (*read_to_end)(const void *g); /* every input read to its end */
  /* Inputs that could not be read (no permission, too many open files),
   * with one of their names in *first. */
  size_t (*unreadable)(const void *g, const char **first);
  void (*flush)(void *g);                    /* emit held partial records */
  void (*ack)(void *g, const lg_batch_t *b); /* see lg_sources_ack */
  /* See lg_sources_sent (b NULL: lg_sources_sent_flush); NULL: not
   * tracked. */
  void (*sent)(void *g, const lg_batch_t *b, uint64_t end_offset);
  /* See lg_sources_each_prefixes; NULL: nothing to tell. */
  void (*each_prefixes)(void *g,
                        void (*cb)(void *ud, uint64_t fingerprint,
                                   const uint64_t *prefix, uint32_t n),
                        void *ud);
  /* See lg_sources_each_read; NULL: nothing to tell. */
  void (*each_read)(void *g,
                    void (*cb)(void *ud, uint64_t fingerprint, uint64_t from,
                               uint64_t to),
                    void *ud);
  /* Saves state (checkpoints) and closes; `done` once closed. */
  void (*close)(void *g, void (*done)(void *ud), void *ud);
  void (*destroy)(void *g); /* after close; NULL-safe */
} lg_source_group_type_t;

/* A source type. Optional callbacks may be NULL. */
typedef struct lg_source_type {
  const char *name;                    /* the config's `type` */
  const lg_source_group_type_t *group; /* shared service, or NULL */
  const lg_conf_source_type_t *conf;   /* its options and their parsing */
  int needs_conf; /* keeps the spec's config (and its hold) while it runs */
  /* Sets the source up (s->spec, s->group are set): 0 or -errno with a
   * reason in err. */
  int (*add)(lg_source_t *s, char *err, size_t errlen);
  /* Starts reading: right after add when the set runs, else at
   * lg_sources_start, before the groups start. 0 or -errno. */
  int (*start)(lg_source_t *s);
  /* A batch this source's group read for it, before it goes to the
   * engine: the type may change it (filters) or copy it, and passes each
   * on with lg_source_emit. NULL: passed on as is. */
  void (*on_batch)(lg_source_t *s, lg_batch_t *b);
  /* For types without a group: backpressure and acks. */
  void (*pause)(lg_source_t *s);
  void (*resume)(lg_source_t *s);
  void (*ack)(lg_source_t *s, const lg_batch_t *b);
  void (*drop)(lg_source_t *s, const lg_batch_t *b);
  /* True while the source has records it will still hand on without new
   * input (e.g. files waiting for their pod's metadata). */
  int (*busy)(const lg_source_t *s);
  /* Stops reading (a reload removed it): what it framed already is handed
   * on now. */
  void (*remove)(lg_source_t *s);
  /* The group is closing: no more calls into it. */
  void (*detach)(lg_source_t *s);
  /* Frees the source's state (handles in their close callbacks). */
  void (*close)(lg_source_t *s);
} lg_source_type_t;

/* One source of a set, as its type sees it. */
struct lg_source {
  const lg_source_type_t *type;
  lg_sources_t *set;
  lg_source_spec_t spec;
  const lg_source_host_t *host;
  void *group; /* the instance of type->group, or NULL */
  void *impl;  /* the type's state */
  /* The type picks each batch's pipeline (b->pipeline, an index into
   * spec.conf's pipelines) instead of the spec's. */
  int chooses_pipeline;
  int removed, closed;
};

/* The source type named `name`, or NULL. */
const lg_source_type_t *lg_source_type_find(const char *name);

/* Types in the registry, for messages ("known: file, kubernetes"): writes
 * their names separated by ", " into buf. */
void lg_source_type_names(char *buf, size_t len);

/* Creates the set (and one instance of each group type). NULL with a
 * reason in err. */
lg_sources_t *lg_sources_create(const lg_source_host_t *h, char *err,
                                size_t errlen);

/* Adds and, when the set runs, starts a source. 0 or -errno with a reason
 * in err; the hold on the config is released on failure too. */
int lg_sources_add(lg_sources_t *set, const lg_source_spec_t *spec, char *err,
                   size_t errlen);

/* Starts the sources added so far, then the groups. 0 or -errno. */
int lg_sources_start(lg_sources_t *set);

/* Stops and frees source `id` (a reload removed it); acks for its batches
 * still reach its group. */
void lg_sources_remove(lg_sources_t *set, uint32_t id);

/* Backpressure: stop reading / read again. NULL-safe. */
void lg_sources_pause(lg_sources_t *set);
void lg_sources_resume(lg_sources_t *set);

/* Paused at the memory budget, nothing in flight, and what sources hold
 * outside batches (held_bytes: lines in progress) is what fills it: only
 * reading on frees memory, so on != 0 lets the groups read their held
 * bytes to their ends (one input at a time), on = 0 (a batch was handed
 * on, or reading resumed) stops that. NULL-safe. */
void lg_sources_drain(lg_sources_t *set, int on);

/* Every record of `b` and of every earlier batch with its file_key is
 * delivered (or dropped on purpose, or dead-lettered). Ignored after
 * lg_sources_close. */
void lg_sources_ack(lg_sources_t *set, const lg_batch_t *b);

/* Records of `b` up to `end_offset` (the end of the last one, in the
 * source's positions) are being sent to an output: they may reach it
 * before they are acked. A file source journals this (at
 * lg_sources_sent_flush) so that a restart
 * counts the records it reads again that may be duplicates. Ignored after
 * lg_sources_close. */
void lg_sources_sent(lg_sources_t *set, const lg_batch_t *b,
                     uint64_t end_offset);

/* After the lg_sources_sent calls of one request, before it goes out:
 * their marks are made durable (one journal write per group). */
void lg_sources_sent_flush(lg_sources_t *set);

/* Calls `cb(ud, fingerprint, from, to)` for every file of which records
 * were handed on so far (those of fingerprint `fingerprint` at offsets
 * from `from` up to `to`, exclusive): so that an output a reload creates
 * knows which records it will never get (lg_output_file_read). Ignored
 * after lg_sources_close. */
void lg_sources_each_read(lg_sources_t *set,
                          void (*cb)(void *ud, uint64_t fingerprint,
                                     uint64_t from, uint64_t to),
                          void *ud);

/* Calls `cb(ud, fingerprint, prefix, n)` for every file open now, as
 * host->file_prefixes was told when it was opened (its prefixes' hashes,
 * read again): for an output a reload creates. Ignored after
 * lg_sources_close. */
void lg_sources_each_prefixes(lg_sources_t *set,
                              void (*cb)(void *ud, uint64_t fingerprint,
                                         const uint64_t *prefix, uint32_t n),
                              void *ud);

/* The engine gives up `b` without delivering it. */
void lg_sources_drop(lg_sources_t *set, const lg_batch_t *b);

/* True when nothing is left to read and no source is busy. */
int lg_sources_idle(const lg_sources_t *set);

/* True when every input is read to its end (--once). */
int lg_sources_read_to_end(const lg_sources_t *set);

/* The number of inputs (files) that could not be read, with the name of
 * one in *first (--once exits 1 then). */
size_t lg_sources_unreadable(const lg_sources_t *set, const char **first);

/* Emits held partial records now (--once, at the end). */
void lg_sources_flush(lg_sources_t *set);

/* The pipeline source `b->source_id` chose for `b` (an index into *conf's
 * pipelines, with *conf the config it refers to), or -1 when the batch
 * goes to its source's configured pipeline. */
int lg_sources_chosen_pipeline(const lg_sources_t *set, const lg_batch_t *b,
                               const lg_config_t **conf);

/* Saves state and closes every group and source; `done` once closed.
 * Acks after this are ignored. The set stays allocated until
 * lg_sources_destroy. */
void lg_sources_close(lg_sources_t *set, void (*done)(void *ud), void *ud);

/* Frees the set (after lg_sources_close's `done`, or when it never
 * started); releases holds still held. NULL-safe. */
void lg_sources_destroy(lg_sources_t *set);

/* For source types: hands batch `b` of source `s` to the engine. */
void lg_source_emit(lg_source_t *s, lg_batch_t *b);

/* For group types: the source of id `id` in the group's set, or NULL. */
lg_source_t *lg_source_by_id(lg_sources_t *set, uint32_t id);

#endif
