package import CaptureCore
internal import CFFmpeg

/// An AVDictionary of options. Functions that take options consume the entries they
/// understand and leave the rest in it, so it stays ours to free afterwards, whatever
/// the call did.
package struct FFDictionary: ~Copyable {
    /// For the `AVDictionary **` parameters (`&options.raw`): FFmpeg may replace it.
    package var raw: OpaquePointer? = nil

    package init() {}

    package mutating func set(_ key: String, _ value: String) throws(CaptureError) {
        let rc = av_dict_set(&raw, key, value, 0)
        if rc < 0 { throw ffmpegError(rc, "av_dict_set(\(key)=\(value))") }
    }

    /// Keys nobody consumed (a misspelt or unsupported option), as "k=v" strings.
    package func leftovers() -> [String] {
        var out: [String] = []
        var entry: UnsafeMutablePointer<AVDictionaryEntry>? = nil
        while true {
            entry = av_dict_get(raw, "", entry, AV_DICT_IGNORE_SUFFIX)
            guard let e = entry else { break }
            out.append("\(String(cString: e.pointee.key))=\(String(cString: e.pointee.value))")
        }
        return out
    }

    deinit {
        var r = raw
        av_dict_free(&r)
    }
}
