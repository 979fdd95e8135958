// libpipewire-0.3 for Swift: a screencast consumer's parameters and metadata.
//
// SPA parameters are built with variadic builder calls and macros, and pw_core's methods
// are macros over an interface table; none of that imports into Swift. Their static inline
// twins live here, each one small enough to read against PipeWire's own examples
// (src/examples/video-play.c) and OBS's linux-pipewire plugin.
#ifndef CPIPEWIRE_SHIM_H
#define CPIPEWIRE_SHIM_H
#include <pipewire/pipewire.h>
#include <spa/param/video/format-utils.h>
#include <spa/param/props.h>
#include <spa/buffer/meta.h>
#include <spa/debug/types.h>
#include <string.h>

/// The largest cursor image the cursor metadata may carry (pixels per side). Producers
/// announce one fixed size (mutter 384x384, kwin 256x256): a consumer's range must contain it,
/// or the cursor metadata is silently left out.
#define CPW_CURSOR_MAX 1024
/// Damage rectangles per buffer (mutter sends up to 32, kwin 16, xdpw 4).
#define CPW_DAMAGE_MAX 32

static inline uint32_t cpw_cursor_meta_size(uint32_t width, uint32_t height) {
    return (uint32_t)(sizeof(struct spa_meta_cursor) + sizeof(struct spa_meta_bitmap) + width * height * 4);
}

/// The formats a shared-memory screencast may come in, best first: 32-bit BGR(x/A) is what
/// the encoder converts from directly; RGB(x/A) is swizzled while copied.
static const uint32_t cpw_formats[4] = {
    SPA_VIDEO_FORMAT_BGRx, SPA_VIDEO_FORMAT_BGRA, SPA_VIDEO_FORMAT_RGBx, SPA_VIDEO_FORMAT_RGBA,
};

/// One EnumFormat object: raw video in those formats, any size, a variable frame rate and
/// at most `max_fps` frames a second.
/// - The producers (mutter, kwin, xdpw) send a fixed `framerate` of 0/1 (variable), which
///   the range must contain, and honour the negotiated `maxFramerate`, a range here so that
///   a 59.95 Hz monitor or kwin's whole hertz still intersect.
/// - No modifier property: the producers' DMA-BUF formats carry a mandatory one, so only
///   their shared-memory (MemFd) format matches.
static inline const struct spa_pod *cpw_build_enum_format(uint8_t *buffer, uint32_t size, uint32_t max_fps) {
    struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, size);
    return spa_pod_builder_add_object(&b,
        SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat,
        SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video),
        SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw),
        SPA_FORMAT_VIDEO_format, SPA_POD_CHOICE_ENUM_Id(5, cpw_formats[0], cpw_formats[0], cpw_formats[1],
                                                        cpw_formats[2], cpw_formats[3]),
        SPA_FORMAT_VIDEO_size, SPA_POD_CHOICE_RANGE_Rectangle(
            &SPA_RECTANGLE(1920, 1080), &SPA_RECTANGLE(1, 1), &SPA_RECTANGLE(16384, 16384)),
        SPA_FORMAT_VIDEO_framerate, SPA_POD_CHOICE_RANGE_Fraction(
            &SPA_FRACTION(0, 1), &SPA_FRACTION(0, 1), &SPA_FRACTION(360, 1)),
        SPA_FORMAT_VIDEO_maxFramerate, SPA_POD_CHOICE_RANGE_Fraction(
            &SPA_FRACTION(max_fps, 1), &SPA_FRACTION(0, 1), &SPA_FRACTION(max_fps, 1)));
}

/// The negotiated format, as far as a consumer of raw frames cares.
struct cpw_video_format {
    uint32_t format;        // enum spa_video_format
    uint32_t width, height;
    uint32_t max_fps_num, max_fps_den;
    int has_modifier;       // the producer insists on DMA-BUF
};

/// Parses a SPA_PARAM_Format. Returns 0, or a negative errno when it is not raw video.
static inline int cpw_parse_video_format(const struct spa_pod *param, struct cpw_video_format *out) {
    uint32_t media_type = 0, media_subtype = 0;
    struct spa_video_info_raw raw;
    memset(out, 0, sizeof(*out));
    if (param == NULL) return -EINVAL;
    if (spa_format_parse(param, &media_type, &media_subtype) < 0) return -EINVAL;
    if (media_type != SPA_MEDIA_TYPE_video || media_subtype != SPA_MEDIA_SUBTYPE_raw) return -ENOTSUP;
    memset(&raw, 0, sizeof(raw));
    if (spa_format_video_raw_parse(param, &raw) < 0) return -EINVAL;
    out->format = raw.format;
    out->width = raw.size.width;
    out->height = raw.size.height;
    out->max_fps_num = raw.max_framerate.num;
    out->max_fps_den = raw.max_framerate.denom;
    out->has_modifier = spa_pod_find_prop(param, NULL, SPA_FORMAT_VIDEO_modifier) != NULL;
    return 0;
}

/// What the consumer asks of the buffers once the format is known: shared memory only, at
/// most `max_buffers` of them (the producers offer 16; every one that cycles through the
/// consumer is a whole frame of resident memory), and the metadata it reads (header with
/// the time, damage, cursor). Fills `params` (room for 4) and returns how many.
static inline uint32_t cpw_build_buffer_params(uint8_t *buffer, uint32_t size, const struct spa_pod **params,
                                               int want_cursor, int32_t max_buffers) {
    struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, size);
    uint32_t n = 0;
    params[n++] = spa_pod_builder_add_object(&b,
        SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers,
        SPA_PARAM_BUFFERS_buffers, SPA_POD_CHOICE_RANGE_Int(max_buffers, 2, max_buffers),
        SPA_PARAM_BUFFERS_dataType, SPA_POD_CHOICE_FLAGS_Int((1 << SPA_DATA_MemFd) | (1 << SPA_DATA_MemPtr)));
    params[n++] = spa_pod_builder_add_object(&b,
        SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
        SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
        SPA_PARAM_META_size, SPA_POD_Int(sizeof(struct spa_meta_header)));
    params[n++] = spa_pod_builder_add_object(&b,
        SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
        SPA_PARAM_META_type, SPA_POD_Id(SPA_META_VideoDamage),
        SPA_PARAM_META_size, SPA_POD_CHOICE_RANGE_Int(
            sizeof(struct spa_meta_region) * CPW_DAMAGE_MAX, sizeof(struct spa_meta_region) * 1,
            sizeof(struct spa_meta_region) * CPW_DAMAGE_MAX));
    if (want_cursor) {
        params[n++] = spa_pod_builder_add_object(&b,
            SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
            SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Cursor),
            SPA_PARAM_META_size, SPA_POD_CHOICE_RANGE_Int(
                cpw_cursor_meta_size(64, 64), cpw_cursor_meta_size(1, 1),
                cpw_cursor_meta_size(CPW_CURSOR_MAX, CPW_CURSOR_MAX)));
    }
    return n;
}

// MARK: Metadata of a dequeued buffer (NULL when the producer did not attach it)

static inline struct spa_meta_header *cpw_meta_header(struct spa_buffer *buffer) {
    return (struct spa_meta_header *)spa_buffer_find_meta_data(buffer, SPA_META_Header, sizeof(struct spa_meta_header));
}

/// The damage rectangles (stream coordinates) and how many are valid; NULL when the buffer
/// has no damage metadata (the whole frame counts as changed).
static inline struct spa_meta_region *cpw_meta_damage(struct spa_buffer *buffer, uint32_t *count) {
    struct spa_meta *meta = spa_buffer_find_meta(buffer, SPA_META_VideoDamage);
    *count = 0;
    if (meta == NULL) return NULL;
    struct spa_meta_region *first = (struct spa_meta_region *)meta->data;
    struct spa_meta_region *r;
    uint32_t n = 0;
    spa_meta_for_each(r, meta) {
        if (!spa_meta_region_is_valid(r)) break;   // an invalid entry ends the array
        n++;
    }
    *count = n;
    return first;
}

/// The cursor metadata, when it says something (id 0: no cursor information in this buffer).
static inline struct spa_meta_cursor *cpw_meta_cursor(struct spa_buffer *buffer) {
    struct spa_meta_cursor *cursor =
        (struct spa_meta_cursor *)spa_buffer_find_meta_data(buffer, SPA_META_Cursor, sizeof(struct spa_meta_cursor));
    return cursor != NULL && spa_meta_cursor_is_valid(cursor) ? cursor : NULL;
}

/// The cursor's new image, when this buffer carries one (bitmap_offset 0: unchanged) and it
/// lies wholly inside the metadata (a producer's numbers are checked before they are used).
static inline struct spa_meta_bitmap *cpw_meta_cursor_bitmap(struct spa_buffer *buffer, struct spa_meta_cursor *cursor) {
    struct spa_meta *meta = spa_buffer_find_meta(buffer, SPA_META_Cursor);
    if (meta == NULL || cursor->bitmap_offset < sizeof(struct spa_meta_cursor)) return NULL;
    uint64_t end = (uint64_t)cursor->bitmap_offset + sizeof(struct spa_meta_bitmap);
    if (end > meta->size) return NULL;
    struct spa_meta_bitmap *bitmap = SPA_PTROFF(cursor, cursor->bitmap_offset, struct spa_meta_bitmap);
    if (bitmap->size.width > 0 && bitmap->size.height > 0) {
        uint64_t pixels_end = (uint64_t)cursor->bitmap_offset + bitmap->offset
                            + (uint64_t)bitmap->stride * bitmap->size.height;
        if (bitmap->offset < sizeof(struct spa_meta_bitmap) || bitmap->stride < 0 || pixels_end > meta->size) return NULL;
    }
    return bitmap;
}

static inline const uint8_t *cpw_bitmap_pixels(struct spa_meta_bitmap *bitmap) {
    return SPA_PTROFF(bitmap, bitmap->offset, const uint8_t);
}

// MARK: Core and thread loop (macros over interfaces)

static inline int cpw_core_add_listener(struct pw_core *core, struct spa_hook *hook,
                                        const struct pw_core_events *events, void *data) {
    return pw_core_add_listener(core, hook, events, data);
}

/// A round trip to the server: `done` with this sequence number comes back after every
/// message sent before it was handled.
static inline int cpw_core_sync(struct pw_core *core) {
    return pw_core_sync(core, PW_ID_CORE, 0);
}

static inline uint32_t cpw_version_stream_events(void) { return PW_VERSION_STREAM_EVENTS; }
static inline uint32_t cpw_version_core_events(void) { return PW_VERSION_CORE_EVENTS; }

/// Connect to the one node asked for, map shared memory, and never be moved to another node
/// when it goes away (the session manager would otherwise link us to some other video
/// source: the wrong screen, silently).
static inline enum pw_stream_flags cpw_consumer_flags(void) {
    return PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS | PW_STREAM_FLAG_DONT_RECONNECT;
}

/// Stream properties of a screen consumer (pw_properties_new is variadic).
static inline struct pw_properties *cpw_screen_consumer_properties(void) {
    return pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CATEGORY, "Capture",
                             PW_KEY_MEDIA_ROLE, "Screen", NULL);
}

#endif
