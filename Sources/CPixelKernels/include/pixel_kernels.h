#ifndef CAPTURE_PIXEL_KERNELS_H
#define CAPTURE_PIXEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// The per-pixel loops of the capture path, in C so that a debug build of the package runs
/// them at a usable speed without special compiler flags (see pixel_kernels.c). Swift callers
/// use them through PixelConversion's BT709Conversion and PixelBlit, which document them.

/// BGRX to I420, BT.709 limited range, a `width` x `height` rectangle (both even, >= 0).
void capture_bt709_convert(const uint8_t *source, ptrdiff_t bytes_per_row, int width, int height,
                           uint8_t *y, ptrdiff_t y_stride, uint8_t *u, ptrdiff_t u_stride,
                           uint8_t *v, ptrdiff_t v_stride);

/// Copies a rectangle of 4-byte pixels, swapping each pixel's first and third bytes.
void capture_copy_swap_red_blue(const uint8_t *source, ptrdiff_t source_bytes_per_row,
                                uint8_t *destination, ptrdiff_t destination_bytes_per_row,
                                int width, int height);

#endif
