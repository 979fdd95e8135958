// swift-tools-version:6.2
//
// capture-agent: the Linux capture runtime.
//
// Layering (each arrow is "depends on"; every module is named):
//
//   capture-agent  CaptureAgent (executable: record, upload, the daemon)
//                    -> CaptureDaemon   -> CaptureControl, SystemdSupport, WebSocketUplink, CapturePipeline
//                    -> CapturePipeline -> X11Capture       -> CX11 (Xlib, XShm, XFixes, XDamage, XRandR), PixelConversion
//                                       -> ScreenCastPortal -> SessionBus -> CSDBus (libsystemd's sd-bus)
//                                       -> WaylandOutputs   -> CWayland (libwayland-client, xdg-output)
//                                       -> PipeWireCapture  -> CPipeWire, PixelConversion
//                                       -> PulseCapture     -> CPulse
//                                       -> MediaEncoding    -> FFmpegObjects, CFFmpeg, CX264, PixelConversion
//                                       -> CaptureSpool (SpoolWriter and SpoolReader: the on-disk layout)
//                    -> WebSocketUplink -> CWebSockets (libwebsockets), CaptureSpool, CaptureUplink
//   capturectl     CaptureCtl (executable) -> CaptureControl (the control protocol, a blocking client)
//
//   capture-endpoint     CaptureEndpointServer (executable) -> CaptureEndpoint
//                          CaptureEndpoint -> Hummingbird, HummingbirdWebSocket, GRDB, CWebhookHTTP (libcurl),
//                                             MediaExport (-> FFmpegObjects, CFFmpeg), CCrypto (libcrypto), CaptureUplink
//   capture-uplink-load  CaptureUplinkLoad (executable) -> CaptureUplinkReplay -> EndpointClient, CaptureSpool
//                          EndpointClient: plain HTTP/1.1 and ws:// clients over SwiftNIO (the tests use it too)
//
//   shared:   CaptureUplink (the uplink's wire messages, chunk metadata) -> CaptureCore
//             FFmpegObjects -> CFFmpeg, CaptureCore: FFmpeg's objects (frame, packet, codec,
//             format, IO and scale contexts), each owned by one value that frees it, for the
//             two modules that call FFmpeg, MediaEncoding and MediaExport
//             CaptureCore (pure Swift vocabulary: errors, channel ids, geometry, media formats and
//             time, clocks, duration parsing, text formatting, JSON, recording summaries)
//             CaptureConcurrency -> CaptureCore: threads and the hand-offs between them (SPSC ring,
//             locks, condition signals, queue wakeups, timers, detached threads, live-instance counts)
//             CaptureSystem -> CaptureCore: the process's files and POSIX surroundings (EINTR-safe
//             calls, atomic files, home directory, stdio, token files, AF_UNIX addresses)
//             SHA256 -> CSHA256 (its compression function in C): SHA-256 for spool chunk checksums
//             and the endpoint's secrets
//             PixelConversion -> CPixelKernels: colour conversion, copies, the pointer's blend and
//             frame diffs; the two loops over every pixel of a frame are C vector code, so they
//             keep up in debug builds without an optimization flag forced on the target
//             Most modules above use CaptureConcurrency and/or CaptureSystem next to CaptureCore;
//             CaptureSpool, CaptureEndpoint and the tests use SHA256
//             LinuxSupport -> CLinuxShims (mallopt, malloc_trim, THP, accept4, SO_PEERCRED): the daemon,
//             capturectl and the endpoint reach these Linux calls only through it; the wrapper
//             modules (PulseCapture, SessionBus, WebSocketUplink) use CLinuxShims' eventfd and
//             thread names directly
//
// The endpoint's dependency set (SwiftNIO and friends) never reaches capture-agent:
// no target the agent links depends on a NIO-based package.
//
// C libraries are reached only through the thin `C*` system-library modules and
// one Swift wrapper module per library (FFmpeg has two users, MediaEncoding and
// MediaExport, which hold its objects through FFmpegObjects); nothing above the
// wrappers touches C.
//
// Test support (never shipped): CaptureTestSupport (rigs, processes, media checks) and
// X11TestSupport -> X11Capture, CX11 (a test drives the X server through the capture's own
// connection: draws on the root window, moves the pointer, sets its cursor).
import PackageDescription

let package = Package(
    name: "capture-agent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "capture-agent", targets: ["CaptureAgent"]),
        .executable(name: "capturectl", targets: ["CaptureCtl"]),
        .executable(name: "capture-endpoint", targets: ["CaptureEndpointServer"]),
        .executable(name: "capture-uplink-load", targets: ["CaptureUplinkLoad"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // The endpoint only (see the layering above).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // MARK: C system libraries (module maps + static inline shims for macros)
        .systemLibrary(
            name: "CX11", pkgConfig: "x11",
            providers: [.apt(["libx11-dev", "libxext-dev", "libxfixes-dev", "libxrandr-dev", "libxdamage-dev"])]),
        .systemLibrary(
            name: "CPulse", pkgConfig: "libpulse",
            providers: [.apt(["libpulse-dev"])]),
        .systemLibrary(
            name: "CFFmpeg", pkgConfig: "libavcodec",
            providers: [.apt(["libavcodec-dev", "libavformat-dev", "libavutil-dev", "libswscale-dev", "libswresample-dev"])]),
        .systemLibrary(
            name: "CX264", pkgConfig: "x264",
            providers: [.apt(["libx264-dev"])]),
        .systemLibrary(
            name: "CWebSockets", pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev"])]),
        // Wayland desktops: the ScreenCast portal over the session bus (sd-bus needs no main
        // loop), the compositor's monitors, and the screencast's PipeWire stream.
        .systemLibrary(
            name: "CSDBus", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(
            name: "CPipeWire", pkgConfig: "libpipewire-0.3",
            providers: [.apt(["libpipewire-0.3-dev"])]),
        // libwayland-client plus the xdg-output protocol code wayland-scanner generated.
        .target(name: "CWayland", linkerSettings: [.linkedLibrary("wayland-client")]),

        // The endpoint's chunk digests (OpenSSL's libcrypto, already there for libwebsockets).
        .systemLibrary(
            name: "CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),

        // The endpoint's webhook POSTs (http and https) over libcurl, one C call per exchange.
        .target(name: "CWebhookHTTP", linkerSettings: [.linkedLibrary("curl")]),

        // libc calls Swift cannot import (variadic prctl; accept4 and SO_PEERCRED need _GNU_SOURCE).
        .target(name: "CLinuxShims"),

        // MARK: Pure Swift core
        // The vocabulary: errors, channels, geometry, media formats and time, clocks, parsing, JSON, summaries.
        .target(name: "CaptureCore"),
        // Threads and the hand-offs between them: the SPSC ring, locks, condition signals, queue
        // wakeups, repeating timers, detached threads, signal blocking, live-instance counts.
        .target(name: "CaptureConcurrency", dependencies: ["CaptureCore"]),
        // The process's files and POSIX surroundings: EINTR-safe calls, atomic files, the home
        // directory, stdio, token files, AF_UNIX addresses.
        .target(name: "CaptureSystem", dependencies: ["CaptureCore"]),
        // SHA-256, dependency-free: spool chunk checksums, the endpoint's secrets and digests.
        // Its compression function is C (CSHA256), fast in the unoptimized builds tests run.
        .target(name: "CSHA256"),
        .target(name: "SHA256", dependencies: ["CSHA256"]),

        // MARK: One wrapper per C library
        .target(name: "X11Capture", dependencies: ["CaptureCore", "CaptureConcurrency", "CX11", "PixelConversion"]),
        .target(name: "SessionBus", dependencies: ["CaptureCore", "CSDBus", "CLinuxShims"]),
        .target(name: "ScreenCastPortal", dependencies: ["CaptureCore", "CaptureSystem", "SessionBus"]),
        .target(name: "WaylandOutputs", dependencies: ["CaptureCore", "CaptureConcurrency", "CWayland"]),
        .target(name: "PipeWireCapture", dependencies: ["CaptureCore", "CaptureConcurrency", "CPipeWire", "PixelConversion"]),
        .target(name: "PulseCapture", dependencies: ["CaptureCore", "CaptureConcurrency", "CPulse", "CLinuxShims"]),
        // FFmpeg's objects (frames, packets, codec, format, IO and scale contexts), each owned
        // by one value that frees it: shared by MediaEncoding and MediaExport.
        .target(name: "FFmpegObjects", dependencies: ["CaptureCore", "CFFmpeg"]),
        .target(name: "MediaEncoding", dependencies: ["CaptureCore", "CFFmpeg", "FFmpegObjects", "CX264", "PixelConversion"]),
        // The per-pixel loops (colour conversion, copies, the pointer's blend, frame diffs). The
        // two that touch every pixel of a frame are C vector code (CPixelKernels), which stays
        // fast enough unoptimized for debug test runs to keep up with 30 fps; Swift's SIMD types
        // are ~50 times slower there.
        .target(name: "CPixelKernels"),
        .target(name: "PixelConversion", dependencies: ["CPixelKernels"]),

        // MARK: Pipeline and storage
        // The uplink's wire messages (hello, chunk frame, ack, errors, close codes) and the
        // chunk metadata: pure Swift, shared by the agent, the endpoint and the tests.
        .target(name: "CaptureUplink", dependencies: ["CaptureCore"]),
        .target(name: "CaptureSpool", dependencies: ["CaptureCore", "CaptureConcurrency", "CaptureSystem", "SHA256", "CaptureUplink"]),
        // The agent's uplink: libwebsockets on its own thread, the protocol as a value type.
        .target(name: "WebSocketUplink", dependencies: ["CaptureCore", "CaptureConcurrency", "CaptureSystem", "CaptureUplink", "CaptureSpool", "CWebSockets", "CLinuxShims"]),
        .target(
            name: "CapturePipeline",
            dependencies: [
                "CaptureCore", "CaptureConcurrency", "CaptureSystem", "X11Capture", "PulseCapture", "MediaEncoding", "CaptureSpool", "CaptureUplink",
                "ScreenCastPortal", "SessionBus", "WaylandOutputs", "PipeWireCapture", "PixelConversion",
                .product(name: "Logging", package: "swift-log"),
            ]),

        // MARK: Control plane
        // The line protocol (framing, requests, responses, events) and a
        // blocking client; shared by the daemon, capturectl and the tests.
        .target(name: "CaptureControl", dependencies: ["CaptureCore", "CaptureSystem", "CaptureUplink", "LinuxSupport"]),
        // The Swift face of CLinuxShims (memory, AF_UNIX peers) for the modules above the wrappers.
        .target(name: "LinuxSupport", dependencies: ["CLinuxShims"]),
        // sd_notify, socket activation and the watchdog, spoken directly (no libsystemd).
        .target(name: "SystemdSupport", dependencies: ["CaptureCore", "CaptureSystem"]),
        // The daemon: sessions, the control socket and stdio transports, configuration.
        .target(
            name: "CaptureDaemon",
            dependencies: [
                "CaptureCore", "CaptureConcurrency", "CaptureSystem", "CapturePipeline", "CaptureSpool", "CaptureControl", "SystemdSupport", "LinuxSupport",
                "CaptureUplink", "WebSocketUplink",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]),

        // One MP4 from a session's chunks (video copied, audio mixed + each channel copied).
        .target(name: "MediaExport", dependencies: ["CaptureCore", "CaptureConcurrency", "CFFmpeg", "FFmpegObjects"]),

        // MARK: The reference endpoint (sessions, tokens, uplink ingest, webhooks, HLS, export)
        .target(
            name: "CaptureEndpoint",
            dependencies: [
                "CaptureCore", "CaptureSystem", "SHA256", "CaptureUplink", "MediaExport", "CCrypto", "CWebhookHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Plain HTTP/1.1 and ws:// clients for the endpoint's tests and tools (no TLS: they run
        // beside it).
        .target(
            name: "EndpointClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]),
        // A reference uplink client that replays a recorded spool (tests, the load generator).
        .target(
            name: "CaptureUplinkReplay",
            dependencies: [
                "CaptureCore", "CaptureUplink", "CaptureSpool", "EndpointClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "CaptureUplinkLoad",
            dependencies: [
                "CaptureCore", "CaptureUplink", "CaptureUplinkReplay", "CaptureEndpoint", "EndpointClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "CaptureEndpointServer",
            dependencies: [
                "CaptureEndpoint", "LinuxSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // MARK: Executables
        .executableTarget(
            name: "CaptureAgent",
            dependencies: [
                "CaptureCore", "CaptureConcurrency", "CaptureSystem", "CapturePipeline", "CaptureSpool", "LinuxSupport", "CaptureDaemon", "CaptureUplink",
                "WebSocketUplink",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "CaptureCtl",
            dependencies: [
                "CaptureCore", "CaptureSystem", "CaptureControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // MARK: Tests
        .target(name: "CaptureTestSupport", dependencies: ["CaptureCore", "CaptureSystem", "CaptureUplink"], path: "Tests/CaptureTestSupport"),
        .target(name: "X11TestSupport", dependencies: ["CaptureCore", "X11Capture", "CX11"], path: "Tests/X11TestSupport"),
        .testTarget(name: "CaptureCoreTests", dependencies: ["CaptureCore", "SHA256", "CaptureSpool"]),
        .testTarget(name: "CaptureConcurrencyTests", dependencies: ["CaptureConcurrency", "CaptureCore"]),
        .testTarget(name: "X11CaptureTests", dependencies: ["X11Capture", "X11TestSupport", "CaptureTestSupport"]),
        .testTarget(name: "PulseCaptureTests", dependencies: ["PulseCapture", "CaptureTestSupport"]),
        .testTarget(name: "MediaEncodingTests", dependencies: ["MediaEncoding", "PixelConversion", "CaptureTestSupport"]),
        .testTarget(name: "FFmpegObjectsTests", dependencies: ["FFmpegObjects", "CFFmpeg", "CaptureCore", "LinuxSupport"]),
        .testTarget(
            name: "CaptureAgentTests",
            dependencies: [
                "CaptureCore", "CaptureConcurrency", "CapturePipeline", "CaptureControl", "CaptureTestSupport",
                // ChunkerTests drive a chunker with real encoders and a real spool.
                "MediaEncoding", "CaptureSpool", "CaptureUplink",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "WaylandCaptureTests",
            dependencies: [
                "CaptureCore", "CapturePipeline", "CaptureControl", "CaptureTestSupport", "WaylandOutputs", "ScreenCastPortal",
            ]),
        .testTarget(name: "CaptureControlTests", dependencies: ["CaptureControl", "CaptureCore", "CaptureUplink", "CaptureTestSupport"]),
        .testTarget(name: "SystemdSupportTests", dependencies: ["SystemdSupport", "CaptureCore", "CaptureSystem", "CaptureTestSupport"]),
        .testTarget(name: "CaptureUplinkTests", dependencies: ["CaptureUplink", "CaptureCore", "SHA256", "WebSocketUplink"]),
        .testTarget(
            name: "CaptureEndpointTests",
            dependencies: [
                "CaptureEndpoint", "CaptureUplink", "CaptureUplinkReplay", "CaptureCore", "SHA256", "CaptureTestSupport",
                "EndpointClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "CaptureDaemonTests",
            dependencies: [
                "CaptureControl", "CaptureCore", "CaptureSystem", "SHA256", "CaptureDaemon", "CaptureTestSupport", "CaptureUplink",
                // Reads what the live capture-endpoint stored (its SQLite index), as a backend would not need to.
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
    ]
)

// Every Swift target of ours: the compiler keeps the layering honest (`InternalImportsByDefault`:
// a module's imports are its own unless it says `public import`; `MemberImportVisibility`: a
// member is visible only where its module is imported) and the spelling explicit
// (`ExistentialAny`).
for target in package.targets where target.type != .system && target.type != .binary && target.type != .plugin {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .enableUpcomingFeature("InternalImportsByDefault"),
        .enableUpcomingFeature("MemberImportVisibility"),
        .enableUpcomingFeature("ExistentialAny"),
    ]
}
