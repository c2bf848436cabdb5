/* The one buffer-format check the native entry points share (step.c, frequencies.c). */
#ifndef SEMCODEC_NATIVE_BUFFERS_H
#define SEMCODEC_NATIVE_BUFFERS_H

#include <Python.h>
#include <string.h>

/* Whether `b` holds items of `kind` ('d' float64, 'b' int8, 'i' int32, 'q' int64), whichever
 * letter its exporter used for that width ('l' is int32 or int64 by platform). */
static inline int holds(const Py_buffer *b, char kind) {
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    const Py_ssize_t size = kind == 'b' ? 1 : kind == 'i' ? 4 : 8;
    return b->itemsize == size && strlen(f) == 1 && (*f == kind || ((kind == 'i' || kind == 'q') && *f == 'l'));
}

#endif
