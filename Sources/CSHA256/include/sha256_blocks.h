#ifndef CAPTURE_SHA256_BLOCKS_H
#define CAPTURE_SHA256_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

/// SHA-256's compression function (FIPS 180-4, 6.2.2) over `count` consecutive 64-byte
/// blocks, updating the eight working words of `state` in place. The padding and the
/// incremental buffering are the Swift module SHA256's (SHA256.swift), the only caller.
void capture_sha256_blocks(uint32_t state[8], const uint8_t *blocks, size_t count);

#endif
