/* bytes.h: fixed-width integers to and from byte strings, in one place:
 * little-endian for the formats Cohort defines (model files, Shamir shares,
 * key-derivation and signature contexts), big-endian where an encoding says
 * so (the audit log's hashed rows, docs/audit.md). */
#ifndef FL_BYTES_H
#define FL_BYTES_H

#include <stdint.h>

static inline void fl_put_le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void fl_put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void fl_put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t fl_get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fl_get_le64(const uint8_t *p) {
    return (uint64_t)fl_get_le32(p) | (uint64_t)fl_get_le32(p + 4) << 32;
}

static inline void fl_put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

#endif
