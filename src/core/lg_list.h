/*
 * lg_list.h - intrusive doubly linked lists: the element type has `prev`
 * and `next` pointers to its own type, the list is a pointer to its first
 * element (NULL: empty). Used for what a module has in flight (requests,
 * connections, sends, files) so that an element leaves its list in O(1).
 *
 * The arguments are evaluated more than once: pass plain lvalues without
 * side effects (`s->sends`, `sd`).
 */
#ifndef LG_LIST_H
#define LG_LIST_H

#include <stddef.h>

/* Puts element `x` first in the list `head`. */
#define LG_LIST_PUSH(head, x)                                                  \
  do {                                                                         \
    (x)->prev = NULL;                                                          \
    (x)->next = (head);                                                        \
    if ((head) != NULL)                                                        \
      (head)->prev = (x);                                                      \
    (head) = (x);                                                              \
  } while (0)

/* Takes element `x` out of the list `head` (x->prev and x->next are left
 * as they were). */
#define LG_LIST_UNLINK(head, x)                                                \
  do {                                                                         \
    if ((x)->prev != NULL)                                                     \
      (x)->prev->next = (x)->next;                                             \
    else                                                                       \
      (head) = (x)->next;                                                      \
    if ((x)->next != NULL)                                                     \
      (x)->next->prev = (x)->prev;                                             \
  } while (0)

#endif
