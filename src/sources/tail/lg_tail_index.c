/* The tailer's indexes: hash tables of files by path, device+inode, real
 * path and key, and the problems reported once per path (notes). */
#include "sources/tail/lg_tail_internal.h"

static int htab_grow(htab_t *h, int which) {
  size_t nb = h->nb ? h->nb * 2 : 64;
  file_t **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < h->nb; i++) {
    for (file_t *f = h->b[i], *nx; f != NULL; f = nx) {
      nx = f->hnext[which];
      size_t k = f->hval[which] & (nb - 1);
      f->hnext[which] = b[k];
      b[k] = f;
    }
  }
  free(h->b);
  h->b = b;
  h->nb = nb;
  return 0;
}

void lg__tail_htab_put(lg_tail_t *t, int which, file_t *f, uint64_t hv) {
  htab_t *h = &t->h[which];
  if (f->in_h[which])
    return;
  /* If growing fails the table just gets longer chains. */
  if (h->n >= h->nb)
    htab_grow(h, which);
  if (h->nb == 0) {
    t->h_lossy |= 1u << which; /* out of memory: lookups miss it */
    return;
  }
  f->hval[which] = hv;
  size_t k = hv & (h->nb - 1);
  f->hnext[which] = h->b[k];
  h->b[k] = f;
  h->n++;
  f->in_h[which] = 1;
}

void lg__tail_htab_del(lg_tail_t *t, int which, file_t *f) {
  htab_t *h = &t->h[which];
  if (!f->in_h[which])
    return;
  file_t **pp = &h->b[f->hval[which] & (h->nb - 1)];
  while (*pp != NULL && *pp != f)
    pp = &(*pp)->hnext[which];
  if (*pp == f)
    *pp = f->hnext[which];
  h->n--;
  f->in_h[which] = 0;
}

/* `hv` is hash_str(path): an event looks a path up in several tables (and
 * the notes), and hashing the path is most of each lookup's cost. */
file_t *lg__tail_by_path_h(lg_tail_t *t, const char *path, uint64_t hv) {
  htab_t *h = &t->h[H_PATH];
  if (h->nb == 0)
    return NULL;
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_PATH])
    if (f->hval[H_PATH] == hv && strcmp(f->path, path) == 0)
      return f;
  return NULL;
}

file_t *lg__tail_by_path(lg_tail_t *t, const char *path) {
  return lg__tail_by_path_h(t, path, hash_str(path));
}

file_t *lg__tail_by_id(lg_tail_t *t, uint64_t dev, uint64_t ino) {
  htab_t *h = &t->h[H_ID];
  if (h->nb == 0)
    return NULL;
  uint64_t hv = hash_id(dev, ino);
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_ID])
    if (f->ino == ino && f->dev == dev)
      return f;
  return NULL;
}

file_t *lg__tail_by_real_h(lg_tail_t *t, const char *path, uint64_t hv) {
  htab_t *h = &t->h[H_REAL];
  if (h->nb == 0)
    return NULL;
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_REAL])
    if (f->hval[H_REAL] == hv && strcmp(f->real, path) == 0)
      return f;
  return NULL;
}

file_t *lg__tail_by_key(lg_tail_t *t, uint64_t key) {
  htab_t *h = &t->h[H_KEY];
  if (h->nb == 0)
    return NULL;
  uint64_t hv = mix64(key);
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_KEY])
    if (f->key == key)
      return f;
  return NULL;
}

static note_t **note_slot(lg_tail_t *t, const char *path, uint64_t hv) {
  if (t->nnotes_b == 0)
    return NULL;
  note_t **pp = &t->notes[hv & (t->nnotes_b - 1)];
  while (*pp != NULL && ((*pp)->h != hv || strcmp((*pp)->path, path) != 0))
    pp = &(*pp)->next;
  return pp;
}

/* Returns 1 the first time `kind` is noted for `path` (the caller then
 * logs), 0 after. */
int lg__tail_note_once(lg_tail_t *t, const char *path, uint32_t kind) {
  uint64_t hv = hash_str(path);
  note_t **pp = note_slot(t, path, hv);
  if (pp != NULL && *pp != NULL) {
    if ((*pp)->kinds & kind)
      return 0;
    (*pp)->kinds |= kind;
    return 1;
  }
  if (t->nnotes >= t->nnotes_b) {
    size_t nb = t->nnotes_b ? t->nnotes_b * 2 : 64;
    note_t **b = calloc(nb, sizeof *b);
    if (b != NULL) {
      for (size_t i = 0; i < t->nnotes_b; i++)
        for (note_t *n = t->notes[i], *nx; n != NULL; n = nx) {
          nx = n->next;
          n->next = b[n->h & (nb - 1)];
          b[n->h & (nb - 1)] = n;
        }
      free(t->notes);
      t->notes = b;
      t->nnotes_b = nb;
    }
  }
  if (t->nnotes_b == 0)
    return 1;
  size_t len = strlen(path);
  note_t *n = malloc(sizeof *n + len + 1);
  if (n == NULL)
    return 1;
  n->h = hv;
  n->kinds = kind;
  memcpy(n->path, path, len + 1);
  n->next = t->notes[hv & (t->nnotes_b - 1)];
  t->notes[hv & (t->nnotes_b - 1)] = n;
  t->nnotes++;
  return 1;
}

int lg__tail_noted_h(lg_tail_t *t, const char *path, uint64_t hv,
                     uint32_t kinds) {
  note_t **pp = note_slot(t, path, hv);
  return pp != NULL && *pp != NULL && ((*pp)->kinds & kinds) != 0;
}

int lg__tail_noted(lg_tail_t *t, const char *path, uint32_t kinds) {
  return lg__tail_noted_h(t, path, hash_str(path), kinds);
}

/* Forgets `kinds` for `path`, so the problem is reported again if it comes
 * back after the path worked (or went away). */
void lg__tail_note_clear(lg_tail_t *t, const char *path, uint32_t kinds) {
  note_t **pp = note_slot(t, path, hash_str(path));
  if (pp == NULL || *pp == NULL)
    return;
  (*pp)->kinds &= ~kinds;
  if ((*pp)->kinds == 0) {
    note_t *n = *pp;
    *pp = n->next;
    free(n);
    t->nnotes--;
  }
}

size_t lg_tail_unreadable(const lg_tail_t *t, const char **first) {
  size_t n = 0;
  if (first != NULL)
    *first = NULL;
  for (size_t i = 0; t != NULL && i < t->nnotes_b; i++)
    for (const note_t *x = t->notes[i]; x != NULL; x = x->next)
      if (x->kinds & N_OPEN) {
        if (n++ == 0 && first != NULL)
          *first = x->path;
      }
  return n;
}
