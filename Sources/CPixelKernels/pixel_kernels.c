// The capture path's per-pixel loops: BGRX -> I420 (BT.709) and the red/blue swap.
//
// Why C: these loops must keep up with 30 fps in every build the tests run, and Swift's SIMD
// types cost about 50 times more unoptimized (each lane operation is a generic call), so the
// Swift version needed `-O` forced on its target in debug builds: an unsafe flag, which makes
// a package unusable as a dependency. Clang's vector extensions stay vector instructions at
// -O0 (with the operands kept on the stack), a few times slower than optimized rather than
// fifty, and are compiled optimized like every other target in release builds.
//
// The arithmetic is BT709Conversion's (PixelConversion/BT709Conversion.swift documents the
// matrix, the fixed-point coefficients and why Float): integers become Floats through the
// 2^23 bit trick, and adding 2^23 rounds to the nearest integer in the low bits, identically
// in the vector and the scalar path, so any even-aligned rectangle converts to exactly the
// bytes a whole frame has there.

#include "pixel_kernels.h"

#include <string.h>

#pragma STDC FP_CONTRACT OFF   // no fused multiply-adds: the scalar and vector paths agree

typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef uint8_t u8x8 __attribute__((vector_size(8)));

// Luma: 219/255 * (0.2126, 0.7152, 0.0722) * 2^15. Chroma: 224/255 * matrix row * 2^15.
#define RY 5983
#define GY 20127
#define BY 2032
#define RU (-3298)
#define GU (-11094)
#define BU 14392
#define RV 14392
#define GV (-13073)
#define BV (-1319)

// As Float; chroma's include the 1/4 of the block mean.
static const float fry = (float)RY / 32768, fgy = (float)GY / 32768, fby = (float)BY / 32768;
static const float fru = (float)RU / 131072, fgu = (float)GU / 131072, fbu = (float)BU / 131072;
static const float frv = (float)RV / 131072, fgv = (float)GV / 131072, fbv = (float)BV / 131072;

static const float magic = 8388608.0f;        // 2^23
static const uint32_t magic_bits = 0x4B000000u;

static inline float float_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t bits_of(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

// Sixteen pixels of two rows: 32 luma, 8 Cb and 8 Cr samples.
static inline void convert16(const uint8_t *top, const uint8_t *bottom, uint8_t *y_top, uint8_t *y_bottom,
                             uint8_t *u, uint8_t *v) {
    u32x16 pa, pb;
    memcpy(&pa, top, sizeof pa);
    memcpy(&pb, bottom, sizeof pb);
    const u32x16 mask = (u32x16){0} + 0xFFu, bits = (u32x16){0} + magic_bits;
    const f32x16 m = (f32x16){0} + magic;
    // A cast between vector types of one size reinterprets the bits.
    f32x16 ab = (f32x16)((pa & mask) | bits) - m;
    f32x16 ag = (f32x16)(((pa >> 8) & mask) | bits) - m;
    f32x16 ar = (f32x16)(((pa >> 16) & mask) | bits) - m;
    f32x16 bb = (f32x16)((pb & mask) | bits) - m;
    f32x16 bg = (f32x16)(((pb >> 8) & mask) | bits) - m;
    f32x16 br = (f32x16)(((pb >> 16) & mask) | bits) - m;

    const f32x16 y_bias = (f32x16){0} + (16 + magic);
    f32x16 ya = ar * fry + ag * fgy + ab * fby + y_bias;
    f32x16 yb = br * fry + bg * fgy + bb * fby + y_bias;
    u8x16 y8a = __builtin_convertvector((u32x16)ya, u8x16);
    u8x16 y8b = __builtin_convertvector((u32x16)yb, u8x16);
    memcpy(y_top, &y8a, sizeof y8a);
    memcpy(y_bottom, &y8b, sizeof y8b);

#define EVEN(x) __builtin_shufflevector(x, x, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD(x) __builtin_shufflevector(x, x, 1, 3, 5, 7, 9, 11, 13, 15)
    f32x8 r = EVEN(ar) + ODD(ar) + EVEN(br) + ODD(br);
    f32x8 g = EVEN(ag) + ODD(ag) + EVEN(bg) + ODD(bg);
    f32x8 b = EVEN(ab) + ODD(ab) + EVEN(bb) + ODD(bb);
#undef EVEN
#undef ODD
    const f32x8 c_bias = (f32x8){0} + (128 + magic);
    f32x8 cb = r * fru + g * fgu + b * fbu + c_bias;
    f32x8 cr = r * frv + g * fgv + b * fbv + c_bias;
    u8x8 cb8 = __builtin_convertvector((u32x8)cb, u8x8);
    u8x8 cr8 = __builtin_convertvector((u32x8)cr, u8x8);
    memcpy(u, &cb8, sizeof cb8);
    memcpy(v, &cr8, sizeof cr8);
}

// One 2x2 block (the rest of a row narrower than 16 pixels): the same arithmetic, per lane.
static inline void convert_block(const uint8_t *top, const uint8_t *bottom, uint8_t *y_top, uint8_t *y_bottom,
                                 uint8_t *u, uint8_t *v) {
    float r = 0, g = 0, b = 0;
    const uint8_t *sources[4] = {top, top + 4, bottom, bottom + 4};
    uint8_t *destinations[4] = {y_top, y_top + 1, y_bottom, y_bottom + 1};
    for (int i = 0; i < 4; i++) {
        uint32_t p;
        memcpy(&p, sources[i], sizeof p);
        float pb = float_bits((p & 0xFF) | magic_bits) - magic;
        float pg = float_bits(((p >> 8) & 0xFF) | magic_bits) - magic;
        float pr = float_bits(((p >> 16) & 0xFF) | magic_bits) - magic;
        *destinations[i] = (uint8_t)bits_of(pr * fry + pg * fgy + pb * fby + (16 + magic));
        r += pr;
        g += pg;
        b += pb;
    }
    *u = (uint8_t)bits_of(r * fru + g * fgu + b * fbu + (128 + magic));
    *v = (uint8_t)bits_of(r * frv + g * fgv + b * fbv + (128 + magic));
}

void capture_bt709_convert(const uint8_t *source, ptrdiff_t bytes_per_row, int width, int height,
                           uint8_t *y, ptrdiff_t y_stride, uint8_t *u, ptrdiff_t u_stride,
                           uint8_t *v, ptrdiff_t v_stride) {
    for (int row = 0; row < height; row += 2) {
        const uint8_t *top = source + row * bytes_per_row;
        const uint8_t *bottom = top + bytes_per_row;
        uint8_t *y_top = y + row * y_stride;
        uint8_t *y_bottom = y_top + y_stride;
        uint8_t *u_row = u + (row / 2) * u_stride;
        uint8_t *v_row = v + (row / 2) * v_stride;
        int x = 0;
        for (; x + 16 <= width; x += 16) {
            convert16(top + x * 4, bottom + x * 4, y_top + x, y_bottom + x, u_row + x / 2, v_row + x / 2);
        }
        for (; x < width; x += 2) {
            convert_block(top + x * 4, bottom + x * 4, y_top + x, y_bottom + x, u_row + x / 2, v_row + x / 2);
        }
    }
}

void capture_copy_swap_red_blue(const uint8_t *source, ptrdiff_t source_bytes_per_row,
                                uint8_t *destination, ptrdiff_t destination_bytes_per_row,
                                int width, int height) {
    const u32x16 keep = (u32x16){0} + 0xFF00FF00u, low = (u32x16){0} + 0xFFu;
    for (int row = 0; row < height; row++) {
        const uint8_t *s = source + row * source_bytes_per_row;
        uint8_t *d = destination + row * destination_bytes_per_row;
        int col = 0;
        for (; col + 16 <= width; col += 16) {
            u32x16 p;
            memcpy(&p, s + col * 4, sizeof p);
            u32x16 swapped = (p & keep) | ((p & low) << 16) | ((p >> 16) & low);
            memcpy(d + col * 4, &swapped, sizeof swapped);
        }
        for (; col < width; col++) {
            uint32_t p;
            memcpy(&p, s + col * 4, sizeof p);
            p = (p & 0xFF00FF00u) | ((p & 0xFFu) << 16) | ((p >> 16) & 0xFFu);
            memcpy(d + col * 4, &p, sizeof p);
        }
    }
}
