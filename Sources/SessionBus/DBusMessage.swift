internal import CSDBus
public import CaptureCore
#if canImport(Glibc)
import Glibc
#endif

/// One D-Bus message (a reply or a signal), owned: the reference is dropped with it.
public final class DBusMessage {
    let pointer: OpaquePointer

    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    /// A message sd-bus lends to a callback: referenced here so it may outlive the call.
    init(borrowing pointer: OpaquePointer) {
        self.pointer = pointer
        sd_bus_message_ref(pointer)
    }

    deinit { sd_bus_message_unref(pointer) }

    /// Reads the body from where the last read stopped.
    public var reader: DBusMessageReader { DBusMessageReader(message: self) }

    public var path: String? { sd_bus_message_get_path(pointer).map { String(cString: $0) } }
}

/// Reads a message's body in order. A value of the wrong type throws (INTERNAL_ERROR names
/// what was expected): peers are desktop services, but their answers are still input.
public struct DBusMessageReader {
    let message: DBusMessage
    private var m: OpaquePointer { message.pointer }

    /// The type code of the next value ("s", "u", "a", "v", "(", "{"), nil at the end of the
    /// current container; and the contents signature for containers.
    public func peek() -> (type: Character, contents: String?)? {
        var type: CChar = 0
        var contents: UnsafePointer<CChar>?
        guard sd_bus_message_peek_type(m, &type, &contents) > 0 else { return nil }
        return (Character(UnicodeScalar(UInt8(bitPattern: type))), contents.map { String(cString: $0) })
    }

    public func readString() throws(CaptureError) -> String {
        var p: UnsafePointer<CChar>?
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "s")), &p), "a string")
        return p.map { String(cString: $0) } ?? ""
    }

    public func readObjectPath() throws(CaptureError) -> String {
        var p: UnsafePointer<CChar>?
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "o")), &p), "an object path")
        return p.map { String(cString: $0) } ?? ""
    }

    public func readUInt32() throws(CaptureError) -> UInt32 {
        var v: UInt32 = 0
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "u")), &v), "a uint32")
        return v
    }

    public func readInt32() throws(CaptureError) -> Int32 {
        var v: Int32 = 0
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "i")), &v), "an int32")
        return v
    }

    public func readBool() throws(CaptureError) -> Bool {
        var v: Int32 = 0
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "b")), &v), "a boolean")
        return v != 0
    }

    public func readDouble() throws(CaptureError) -> Double {
        var v: Double = 0
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "d")), &v), "a double")
        return v
    }

    /// Takes a Unix file descriptor out of the message: a duplicate the caller owns.
    public func readFileDescriptor() throws(CaptureError) -> Int32 {
        var fd: Int32 = -1
        try check(sd_bus_message_read_basic(m, CChar(UInt8(ascii: "h")), &fd), "a file descriptor")
        let own = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        guard own >= 0 else {
            throw CaptureError(.internalError, "cannot duplicate the descriptor a D-Bus reply carried: \(String(cString: strerror(errno)))")
        }
        return own
    }

    /// Enters an array of `contents` ("{sv}", "(ua{sv})"); false when the message has no
    /// array there.
    public func enterArray(_ contents: String) throws(CaptureError) {
        try check(sd_bus_message_enter_container(m, CChar(UInt8(ascii: "a")), contents), "an array of \(contents)")
    }

    public func enterStruct(_ contents: String) throws(CaptureError) {
        try check(sd_bus_message_enter_container(m, CChar(UInt8(ascii: "r")), contents), "a struct (\(contents))")
    }

    public func enterDictEntry(_ contents: String) throws(CaptureError) {
        try check(sd_bus_message_enter_container(m, CChar(UInt8(ascii: "e")), contents), "a dict entry {\(contents)}")
    }

    /// Enters a variant, whatever it holds (peek first to know what).
    public func enterVariant() throws(CaptureError) {
        guard let next = peek(), next.type == "v", let contents = next.contents else {
            throw CaptureError(.internalError, "D-Bus message: expected a variant")
        }
        try check(sd_bus_message_enter_container(m, CChar(UInt8(ascii: "v")), contents), "a variant of \(contents)")
    }

    public func exitContainer() throws(CaptureError) {
        try check(sd_bus_message_exit_container(m), "the end of a container")
    }

    /// Skips the next value, whatever it is.
    public func skip() throws(CaptureError) {
        try check(sd_bus_message_skip(m, nil), "a value to skip")
    }

    /// Reads an `a{sv}` dictionary: `body` is called with each key while the reader stands on
    /// the variant's contents; whatever `body` leaves unread of the value is skipped.
    public func readDictionary(_ body: (String, DBusMessageReader) throws(CaptureError) -> Void) throws(CaptureError) {
        try enterArray("{sv}")
        while let next = peek(), next.type == "e" {
            try enterDictEntry("sv")
            let key = try readString()
            try enterVariant()
            try body(key, self)
            while peek() != nil { try skip() }
            try exitContainer()   // the variant
            try exitContainer()   // the entry
        }
        try exitContainer()
    }

    private func check(_ rc: Int32, _ what: String) throws(CaptureError) {
        if rc <= 0 {
            throw CaptureError(.internalError, "D-Bus message: expected \(what)\(rc < 0 ? " (\(String(cString: strerror(-rc))))" : " but found the end")")
        }
    }
}

/// Appends a call's arguments in order.
public struct DBusMessageWriter {
    let message: OpaquePointer
    private var failure: CaptureError?

    init(message: OpaquePointer) { self.message = message }

    public mutating func append(_ value: String) throws(CaptureError) {
        try check(value.withCString { sd_bus_message_append_basic(message, CChar(UInt8(ascii: "s")), $0) })
    }

    public mutating func appendObjectPath(_ value: String) throws(CaptureError) {
        try check(value.withCString { sd_bus_message_append_basic(message, CChar(UInt8(ascii: "o")), $0) })
    }

    public mutating func append(_ value: UInt32) throws(CaptureError) {
        var v = value
        try check(sd_bus_message_append_basic(message, CChar(UInt8(ascii: "u")), &v))
    }

    public mutating func append(_ value: Int32) throws(CaptureError) {
        var v = value
        try check(sd_bus_message_append_basic(message, CChar(UInt8(ascii: "i")), &v))
    }

    public mutating func append(_ value: Double) throws(CaptureError) {
        var v = value
        try check(sd_bus_message_append_basic(message, CChar(UInt8(ascii: "d")), &v))
    }

    public mutating func append(_ value: Bool) throws(CaptureError) {
        var v: Int32 = value ? 1 : 0
        try check(sd_bus_message_append_basic(message, CChar(UInt8(ascii: "b")), &v))
    }

    /// An `a{sv}` of the given entries.
    public mutating func appendDictionary(_ entries: [(String, DBusVariant)]) throws(CaptureError) {
        try check(sd_bus_message_open_container(message, CChar(UInt8(ascii: "a")), "{sv}"))
        for (key, value) in entries {
            try check(sd_bus_message_open_container(message, CChar(UInt8(ascii: "e")), "sv"))
            try append(key)
            try appendVariant(value)
            try check(sd_bus_message_close_container(message))
        }
        try check(sd_bus_message_close_container(message))
    }

    public mutating func appendVariant(_ value: DBusVariant) throws(CaptureError) {
        try check(sd_bus_message_open_container(message, CChar(UInt8(ascii: "v")), value.signature))
        switch value {
        case .string(let s): try append(s)
        case .uint32(let u): try append(u)
        case .int32(let i): try append(i)
        case .bool(let b): try append(b)
        case .double(let d): try append(d)
        case .objectPath(let p): try appendObjectPath(p)
        }
        try check(sd_bus_message_close_container(message))
    }

    /// Opens a container (`a`, `r`, `e`, `v`) of `contents`; close it with `close()`.
    public mutating func open(_ type: Character, _ contents: String) throws(CaptureError) {
        try check(sd_bus_message_open_container(message, CChar(type.asciiValue ?? 0), contents))
    }

    public mutating func close() throws(CaptureError) {
        try check(sd_bus_message_close_container(message))
    }

    func finish() throws(CaptureError) {
        if let failure { throw failure }
    }

    private mutating func check(_ rc: Int32) throws(CaptureError) {
        if rc < 0 {
            let error = CaptureError(.internalError, "cannot build a D-Bus message: \(String(cString: strerror(-rc)))")
            failure = error
            throw error
        }
    }
}

/// A value for an `a{sv}` entry.
public enum DBusVariant {
    case string(String)
    case uint32(UInt32)
    case int32(Int32)
    case bool(Bool)
    case double(Double)
    case objectPath(String)

    var signature: String {
        switch self {
        case .string: "s"
        case .uint32: "u"
        case .int32: "i"
        case .bool: "b"
        case .double: "d"
        case .objectPath: "o"
        }
    }
}
